"""A generated world that moves and has depth: sequences of frames for tracking and 3D.

A sequence is T frames of one world (same classes, textures, shapes and colours as ``data.world``): a stuff
background that is static or pans (a canvas wider than the frame, cropped by a moving window), and
*things* that move at a constant speed per object along straight or curved paths, enter and leave the frame
and occlude each other. Every thing carries a ground-truth ``track_id`` (1..N, stable over the sequence).
Context things (a boat on water, a tent on grass) stand still on their stuff and move with the background.

Depth is a pinhole camera's (fx, fy, cx, cy; pixel centres at integer coordinates, the OpenCV/ROS
convention), in metres along the optical axis. Stuff lies on planes: ground stuff (grass, water, sand,
wooden floor) on a ground plane that recedes with the image row, walls (brick wall) on a fronto-parallel
plane, sky at ``far_depth``. Things are fronto-parallel cut-outs, each at its own depth, always nearer than
any stuff; the nearer of two things is drawn in front (depth order decides occlusion). Back-projecting a
segment's pixels with the exact depth gives its stored 3D centroid (``centroid_xyz``).

Every frame is a pure function of ``(seed, index, frame, cfg, world_cfg)``: same arguments, same bytes, in
any order of access.

Parts: ``config`` (SequenceConfig, Camera, constants), ``plan`` (the planned Sequence, paths and motion),
``render`` (one Frame: image, panoptic ids, sensor depth, segments_info) and ``files`` (the COCO panoptic
layout with per-frame depth and camera info on disk; ``sensor_frames``: what a camera with a registered depth
sensor publishes, for bags with ``depth`` and ``camera_info``).
"""
from maskclip_ros.data.sequences.config import (GROUND_STUFF, MASK_MARGIN, MAX_DEPTH_MM, MM_PER_M, THING_ID_OFFSET,
                                                WALL_STUFF, Camera, SequenceConfig, camera_for,
                                                default_sequence_config, duration_s)
from maskclip_ros.data.sequences.files import (RecordedFrame, SensorFrame, depth_to_mm, frame_name, read_depth,
                                               read_sequences, sensor_frames, write_sequences)
from maskclip_ros.data.sequences.plan import Sequence, Track, generate_sequence, stuff_planes, track_pose
from maskclip_ros.data.sequences.render import Frame, render_frame, thing_mask

__all__ = ["GROUND_STUFF", "MASK_MARGIN", "MAX_DEPTH_MM", "MM_PER_M", "THING_ID_OFFSET", "WALL_STUFF", "Camera",
           "Frame", "RecordedFrame", "Sequence", "SensorFrame", "SequenceConfig", "Track", "camera_for",
           "default_sequence_config", "depth_to_mm", "duration_s", "frame_name", "generate_sequence", "read_depth",
           "read_sequences", "render_frame", "sensor_frames", "stuff_planes", "thing_mask", "track_pose",
           "write_sequences"]
