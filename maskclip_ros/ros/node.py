"""The maskclip_ros lifecycle node: camera frames in, panoptic labels, segments and an overlay out.

A thin adapter over the model core (``maskclip_ros.pipeline``): it converts messages, declares parameters
(from config/default.yaml), manages QoS, threads and the lifecycle, and publishes. Segmentation happens in
``Segmenter.segment`` only.

Lifecycle: configure builds the Segmenter and the initial vocabulary (a failure leaves the node unconfigured
and logs what to fix); activate creates the subscriptions, publishers and the inference worker; deactivate
stops them; cleanup frees the models. ``autostart`` walks configure -> activate at startup.

Threads: subscription callbacks convert and validate a frame and put it in a one-slot buffer (a frame the
worker has not started is replaced and counted as dropped); one worker thread runs inference on the newest
frame. The worker reads the active Vocabulary reference once per frame and passes it to segment(), so a
vocabulary change (service or parameter) applies between frames and never mixes two vocabularies.
"""
from __future__ import annotations

import gc
import re
import signal
import sys
import threading
import time
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from maskclip_ros.msg import Segmentation
from maskclip_ros.msg import Vocabulary as VocabularyMsg
from maskclip_ros.ros import messages
from maskclip_ros.ros.client import parse_classes
from maskclip_ros.ros.conversions import ImageConverter, ImageError
from maskclip_ros.ros.frames import Frame, LatestFrameSlot, StampPairer, labels_to_masks, stamp_key
from maskclip_ros.ros.overlay import draw_overlay
from maskclip_ros.config import nest
from maskclip_ros.ros.params import descriptor, load_specs
from maskclip_ros.ros.stats import RollingStats, diagnostic_array
from maskclip_ros.srv import SetVocabulary

NODE_NAME = "maskclip"
# Inputs (relative, remappable) and outputs (private, remappable).
IMAGE_TOPIC = "image"
COMPRESSED_TOPIC = "image/compressed"
PROPOSALS_TOPIC = "proposals"
OUTPUT_TOPICS = {"panoptic": "~/panoptic", "semantic": "~/semantic", "segments": "~/segments",
                 "overlay": "~/overlay", "vocabulary": "~/vocabulary"}
DIAGNOSTICS_TOPIC = "/diagnostics"
SERVICE_NAME = "~/set_vocabulary"
GIL_SWITCH_INTERVAL_S = 0.0005  # see run()
# When each parameter applies (see maskclip_ros.ros.params): applied from the next frame, read once at
# startup, or (everything else) read by configure/activate.
RUNTIME_PARAMETERS = re.compile(
    r"^(merge\.|vocabulary\.(class_names|is_thing|prompt_templates)$|publish_embeddings$|overlay\.)")
STARTUP_PARAMETERS = ("autostart",)


def parameter_kind(name: str) -> str:
    """"runtime", "startup" or "configure" for a parameter of config/default.yaml."""
    if RUNTIME_PARAMETERS.match(name):
        return "runtime"
    return "startup" if name in STARTUP_PARAMETERS else "configure"


class SegmentationNode(LifecycleNode):
    """Open-vocabulary panoptic segmentation node (see the module docstring)."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._specs = {s.name: s for s in load_specs(parameter_kind)}
        self._declare(self._specs.values())
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._converter = ImageConverter()
        self._vocab_lock = threading.Lock()      # serialises vocabulary changes (service, parameters)
        self._segmenter = None                   # the model core; set on configure
        self._vocabulary = None                  # the active core Vocabulary; replaced, never mutated
        self._last_version = 0                   # versions never repeat in this process (reconfigure too)
        self._service = None
        self._io: dict[str, Any] = {}            # publishers, subscriptions, timer (active only)
        self._slot: LatestFrameSlot | None = None
        self._worker: threading.Thread | None = None
        self._pairer: StampPairer | None = None
        self._stats = RollingStats(self._param("diagnostics.window"))  # replaced at every configure
        self._frame_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self.get_logger().info(f"image conversions via {self._converter.backend}")
        if self._param("autostart"):
            self._call_soon(self._autostart)

    # ---------------------------------------------------------------- parameters
    def _declare(self, specs) -> None:
        for spec in specs:
            if self.has_parameter(spec.name):  # e.g. use_sim_time, declared by rclpy itself
                continue
            try:
                self.declare_parameter(spec.name, spec.default, descriptor(spec))
            except InvalidParameterTypeException as error:
                raise ValueError(f"parameter {spec.name!r} must be a {type(spec.default).__name__} like "
                                 f"its default {spec.default!r} in config/default.yaml: {error}") from None
            except InvalidParameterValueException as error:  # outside the range in its descriptor
                raise ValueError(f"parameter {spec.name!r}: {error}") from None

    def _param(self, name: str) -> Any:
        value = self.get_parameter(name).value
        return [] if value is None and self._specs[name].default is None else value

    def _params(self) -> dict[str, Any]:
        """Current parameter values in the params-file layout (what build_segmenter takes)."""
        return nest({name: self._param(name) for name in self._specs})

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validates and applies runtime changes; vocabulary changes share the service's validation."""
        changes = {p.name: p.value for p in params if p.name in self._specs}
        if self._segmenter is None:  # unconfigured: the next configure uses them; vocabulary rules apply now
            return self._check_vocabulary_parameters(changes)
        frozen = sorted(name for name in changes if self._specs[name].kind == "configure")
        if frozen:
            return SetParametersResult(successful=False, reason=(
                f"{', '.join(frozen)} apply at configure: deactivate and clean up the node, set them, then "
                "configure again"))
        try:
            if any(name.startswith("vocabulary.") for name in changes):
                self._apply_vocabulary_parameters(changes)
            merge = {n.split(".", 1)[1]: v for n, v in changes.items() if n.startswith("merge.")}
            if merge:
                self._segmenter.set_merge_config(**merge)
        except (ValueError, TypeError) as error:  # VocabularyError is a ValueError
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def _vocabulary_request(self, changes: dict[str, Any]) -> tuple[list, list, list]:
        """(class names, thing flags, templates) after `changes`, the rest from the current parameters.

        Class names may carry the client's ":thing" / ":stuff" suffix. A change of class_names alone takes
        its flags from the suffixes (no suffix = thing), as the service does when is_thing is empty, so
        `ros2 param set ... vocabulary.class_names "[person, floor:stuff]"` works on its own; otherwise
        vocabulary.is_thing holds the flags. Raises ValueError for another suffix."""
        def value(key: str) -> list:
            name = f"vocabulary.{key}"
            return list(changes[name] if name in changes else self._param(name) or [])

        names, suffix_flags = parse_classes(value("class_names"))
        names_alone = "vocabulary.class_names" in changes and "vocabulary.is_thing" not in changes
        return names, suffix_flags if names_alone else value("is_thing"), value("prompt_templates")

    def _check_vocabulary_parameters(self, changes: dict[str, Any]) -> SetParametersResult:
        """The core's vocabulary rules without a model (unconfigured node); text embeddings come at configure."""
        from maskclip_ros.config import from_section
        from maskclip_ros.model.vocabulary import (VocabularyConfig, VocabularyError, validate_templates,
                                                   validate_vocabulary)

        if not any(name.startswith("vocabulary.") for name in changes):
            return SetParametersResult(successful=True)
        try:
            names, flags, templates = self._vocabulary_request(changes)
            config = from_section(VocabularyConfig, self._params()["vocabulary"], "vocabulary", shared=True)
            validate_vocabulary(names, flags or None, config)
            validate_templates(templates)
        except ValueError as error:  # VocabularyError, or a bad ":suffix"
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def _apply_vocabulary_parameters(self, changes: dict[str, Any]) -> None:
        names, flags, templates = self._vocabulary_request(changes)
        active = self._vocabulary
        if (tuple(names), tuple(flags), tuple(templates)) == \
                (active.class_names, active.is_thing, active.templates):
            return  # the parameters are being synced to a vocabulary the service already applied
        self._replace_vocabulary(names, flags or None, templates or None)
        # The parameters should show the active vocabulary (plain names, derived flags): set them once this
        # callback has returned (parameters cannot be set from inside it).
        self._call_soon(self._sync_vocabulary_parameters)

    def _call_soon(self, function) -> None:
        """Run `function` once from the executor, as soon as possible (a one-shot timer)."""
        timer = None

        def once() -> None:
            timer.cancel()
            self.destroy_timer(timer)
            function()

        timer = self.create_timer(0.0, once, callback_group=self._timer_group)

    # ---------------------------------------------------------------- lifecycle
    def _autostart(self) -> None:
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        params = self._params()
        self._stats = RollingStats(params["diagnostics"]["window"])
        try:
            self._segmenter = self._build_segmenter(params)
            names, flags, templates = self._vocabulary_request({})
            self._vocabulary = self._segmenter.make_vocabulary(
                names, flags or None, templates or None, version=self._last_version + 1)
            self._last_version = self._vocabulary.version
        except Exception as error:  # noqa: BLE001 - every configure failure must end in a clear log
            self._segmenter = self._vocabulary = None
            self.get_logger().error(
                f"configure failed, staying unconfigured: {type(error).__name__}: {error}. Fix the parameter "
                "(e.g. with a params file or ros2 param set) and trigger configure again.")
            return TransitionCallbackReturn.FAILURE
        self._service = self.create_service(SetVocabulary, SERVICE_NAME, self._on_set_vocabulary,
                                            callback_group=self._service_group)
        self.get_logger().info(f"configured: {self._model_name()} on {params['device']} "
                               f"({params['precision']}), {len(self._vocabulary.class_names)} classes")
        return TransitionCallbackReturn.SUCCESS

    def _build_segmenter(self, params: dict[str, Any]):
        """The model core's one factory (it checks device and precision and says what to fix)."""
        import torch  # lazily: `maskclip-ros --help` must not import torch

        from maskclip_ros.pipeline import build_segmenter

        if params["num_threads"] > 0:
            torch.set_num_threads(int(params["num_threads"]))
        return build_segmenter(params, device=str(params["device"]), precision=str(params["precision"]))

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._create_publishers()
        self._slot = LatestFrameSlot()
        self._worker = threading.Thread(target=self._work, args=(self._slot,), name="maskclip-worker",
                                        daemon=True)
        self._worker.start()
        self._create_subscriptions()
        self._io["diagnostics_timer"] = self.create_timer(
            self._param("diagnostics.period"), self._publish_diagnostics, callback_group=self._timer_group)
        self._publish_vocabulary()
        self.get_logger().info(f"active: listening on {self._io['frames'].topic_name}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_io()
        self.get_logger().info("inactive: subscriptions and publishers removed")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._free_models()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_io()
        self._free_models()
        return TransitionCallbackReturn.SUCCESS

    def _free_models(self) -> None:
        if self._service is not None:
            self.destroy_service(self._service)
            self._service = None
        on_cuda = str(self._param("device")).startswith("cuda")
        self._segmenter = self._vocabulary = None
        gc.collect()
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    def stop(self) -> None:
        """Stop the worker and remove the I/O (safe to call in any state, e.g. at process exit)."""
        self._stop_io()

    # ---------------------------------------------------------------- I/O
    def _create_publishers(self) -> None:
        depth = self._param("output_depth")
        reliable = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        types = {"panoptic": Image, "semantic": Image, "segments": Segmentation, "overlay": Image,
                 "vocabulary": VocabularyMsg}
        for key, topic in OUTPUT_TOPICS.items():
            self._io[key] = self.create_publisher(
                types[key], topic, latched if key == "vocabulary" else reliable,
                qos_overriding_options=QoSOverridingOptions.with_default_policies(),
                event_callbacks=PublisherEventCallbacks(incompatible_qos=self._incompatible_qos_warning(topic)))
        self._io["diagnostics"] = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)

    def _create_subscriptions(self) -> None:
        compressed = self._param("compressed_input")
        topic, msg_type = (COMPRESSED_TOPIC, CompressedImage) if compressed else (IMAGE_TOPIC, Image)
        self._io["frames"] = self._subscribe(msg_type, topic, self._on_frame)
        self._pairer = None
        # External proposals: the configured backend, or no proposer section at all (segment needs masks).
        if self._params().get("proposals", {}).get("backend", "external") == "external":
            self._pairer = StampPairer(self._param("external_queue"), on_evict=self._on_unpaired)
            self._io["proposals"] = self._subscribe(Image, PROPOSALS_TOPIC, self._on_proposals)

    def _subscribe(self, msg_type, topic: str, callback):
        return self.create_subscription(
            msg_type, topic, callback, qos_profile_sensor_data, callback_group=self._frame_group,
            qos_overriding_options=QoSOverridingOptions.with_default_policies(),
            event_callbacks=SubscriptionEventCallbacks(incompatible_qos=self._incompatible_qos_warning(topic)))

    def _incompatible_qos_warning(self, topic: str):
        def warn(info) -> None:
            name = self.resolve_topic_name(topic)
            self.get_logger().warning(
                f"incompatible QoS on {name} (policy {info.last_policy_kind.name}, {info.total_count} so far): "
                f"no messages will flow. Match the other side or set the qos_overrides.{name}.* parameters "
                "(e.g. reliability) in the params file.")
        return warn

    def _stop_io(self) -> None:
        for key in ("frames", "proposals"):
            if key in self._io:
                self.destroy_subscription(self._io.pop(key))
        if self._slot is not None:
            self._slot.close()
        if self._worker is not None:
            self._worker.join()
        self._slot = self._worker = None
        if "diagnostics_timer" in self._io:
            self.destroy_timer(self._io.pop("diagnostics_timer"))
        for key in (*OUTPUT_TOPICS, "diagnostics"):
            if key in self._io:
                self.destroy_publisher(self._io.pop(key))

    # ---------------------------------------------------------------- frames in
    def _on_frame(self, msg: Image | CompressedImage) -> None:
        received = time.monotonic()
        self._stats.count("received", received)
        try:
            rgb = (self._converter.compressed_to_rgb(msg) if isinstance(msg, CompressedImage)
                   else self._converter.image_to_rgb(msg))
        except ImageError as error:
            self._stats.count("bad", received)
            self.get_logger().warning(f"dropped a bad frame (stamp {stamp_key(msg.header)}): {error}",
                                      throttle_duration_sec=1.0)
            return
        frame = Frame(header=msg.header, rgb=rgb, received=received)
        if self._pairer is None:
            self._hand_over(frame)
        elif (pair := self._pairer.add("frame", stamp_key(msg.header), frame)) is not None:
            self._hand_over(pair[0], pair[1])

    def _on_proposals(self, msg: Image) -> None:
        try:
            masks = labels_to_masks(self._converter.image_to_labels(msg))  # (M, H, W) bool
        except ImageError as error:
            self._stats.count("bad")
            self.get_logger().warning(f"dropped a bad proposals image: {error}", throttle_duration_sec=1.0)
            return
        if (pair := self._pairer.add("proposals", stamp_key(msg.header), masks)) is not None:
            self._hand_over(*pair)

    def _on_unpaired(self, side: str) -> None:
        """A frame (or a proposals image) waited too long for its partner: the frame counts as dropped."""
        if side == "frame":
            self._stats.count("dropped")

    def _hand_over(self, frame: Frame, masks=None) -> None:
        if masks is not None:
            if masks.shape[1:] != frame.rgb.shape[:2]:
                self._stats.count("bad")
                self.get_logger().warning(f"dropped a frame: proposals {masks.shape[1:]} do not match the image "
                                          f"{frame.rgb.shape[:2]}", throttle_duration_sec=1.0)
                return
            frame = Frame(frame.header, frame.rgb, frame.received, masks)
        slot = self._slot
        if slot is not None and slot.put(frame):
            self._stats.count("dropped")

    # ---------------------------------------------------------------- inference worker
    def _work(self, slot: LatestFrameSlot) -> None:
        while (frame := slot.take()) is not None:
            try:
                self._process(frame)
            except Exception as error:  # noqa: BLE001 - one bad frame must not stop the node
                self._stats.count("failed")
                self.get_logger().error(f"frame {stamp_key(frame.header)} failed: {type(error).__name__}: "
                                        f"{error}", throttle_duration_sec=1.0)

    def _process(self, frame: Frame) -> None:
        segmenter, vocabulary = self._segmenter, self._vocabulary  # one vocabulary for the whole frame
        with_embeddings = bool(self._param("publish_embeddings"))
        result = segmenter.segment(frame.rgb, vocabulary, external_masks=frame.external_masks,
                                   with_embeddings=with_embeddings)
        start = time.monotonic()
        self._publish(frame, result, with_embeddings)
        done = time.monotonic()
        for stage, ms in result.timings_ms.items():
            self._stats.latency(stage, ms, done)
        self._stats.latency("publish", 1000 * (done - start), done)
        self._stats.latency("total", 1000 * (done - frame.received), done)
        self._stats.count("published", done)

    def _publish(self, frame: Frame, result, with_embeddings: bool) -> None:
        io, header, conv = self._io, frame.header, self._converter
        if not io:
            return  # deactivated while this frame was running
        io["panoptic"].publish(conv.labels_to_image(result.panoptic, "32SC1", header))
        io["semantic"].publish(conv.labels_to_image(messages.semantic_labels(result.semantic), "mono16", header))
        io["segments"].publish(messages.segmentation_msg(result, header, with_embeddings))
        if io["overlay"].get_subscription_count() > 0:
            picture = draw_overlay(frame.rgb, result.panoptic, result.semantic, result.segments,
                                   result.vocabulary.class_names, alpha=self._param("overlay.alpha"),
                                   labels=self._param("overlay.labels"))
            io["overlay"].publish(conv.rgb_to_image(picture, header))
            self._stats.count("overlay")

    # ---------------------------------------------------------------- vocabulary
    def _replace_vocabulary(self, names, is_thing, templates) -> None:
        """Validate and build a new vocabulary (core rules; VocabularyError says why) and make it active.
        templates None keeps the active templates."""
        with self._vocab_lock:
            active = self._vocabulary
            vocabulary = self._segmenter.make_vocabulary(
                list(names), list(is_thing) if is_thing else None,
                list(templates) if templates else list(active.templates), version=self._last_version + 1)
            self._vocabulary, self._last_version = vocabulary, vocabulary.version
        self.get_logger().info(f"vocabulary v{vocabulary.version}: {', '.join(vocabulary.class_names)}")
        self._publish_vocabulary()

    def _on_set_vocabulary(self, request, response):
        from maskclip_ros.model.vocabulary import VocabularyError

        try:
            self._replace_vocabulary(request.class_names, request.is_thing, request.prompt_templates)
        except VocabularyError as error:
            response.success, response.message = False, f"refused: {error}"
        else:
            response.success = True
            response.message = f"vocabulary v{self._vocabulary.version} active"
            self._sync_vocabulary_parameters()
        active = self._vocabulary
        response.version, response.class_names = int(active.version), list(active.class_names)
        return response

    def _sync_vocabulary_parameters(self) -> None:
        active = self._vocabulary
        self.set_parameters_atomically([Parameter("vocabulary.class_names", value=list(active.class_names)),
                                        Parameter("vocabulary.is_thing", value=list(active.is_thing)),
                                        Parameter("vocabulary.prompt_templates", value=list(active.templates))])

    def _publish_vocabulary(self) -> None:
        publisher, vocabulary = self._io.get("vocabulary"), self._vocabulary
        if publisher is not None and vocabulary is not None:
            header = Header()
            header.stamp = self.get_clock().now().to_msg()
            publisher.publish(messages.vocabulary_msg(vocabulary, header))

    # ---------------------------------------------------------------- diagnostics
    def _model_name(self) -> str:
        return f"{self._param('clip.model_name')} / {self._param('maskclip.mode')}" \
            if "maskclip.mode" in self._specs else str(self._param("clip.model_name"))

    def _publish_diagnostics(self) -> None:
        publisher, vocabulary = self._io.get("diagnostics"), self._vocabulary
        if publisher is None:
            return
        received, published = self._stats.rate("received"), self._stats.rate("published")
        frames = self._io.get("frames")
        problem = ""
        if received > 0 and published == 0:
            problem = "frames arrive but none are published"
        elif frames is not None and received == 0 and frames.get_publisher_count() > 0:
            problem = (f"a publisher is matched on {frames.topic_name} but no frame arrived: large best-effort "
                       f"frames may be lost in transport; try qos_overrides.{frames.topic_name}.subscription."
                       "reliability: reliable")
        info = {"device": str(self._param("device")), "precision": str(self._param("precision")),
                "model": self._model_name(), "image_backend": self._converter.backend,
                "vocabulary_version": str(vocabulary.version if vocabulary else 0),
                "vocabulary_size": str(len(vocabulary.class_names) if vocabulary else 0)}
        publisher.publish(diagnostic_array(self._stats, name=f"{self.get_fully_qualified_name()}: segmentation",
                                           hardware_id=info["device"], stamp=self.get_clock().now().to_msg(),
                                           info=info, problem=problem))


def run(ros_args: list[str]) -> int:
    """Run the node until SIGINT (the `maskclip-ros node` command). ros_args: ['--ros-args', ...] or []."""
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    # The inference worker runs Python between torch kernels; a short GIL switch interval keeps the
    # executor threads (frame, service and parameter callbacks) from waiting 5 ms per hand-over.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    rclpy.init(args=["maskclip_node", *ros_args])
    node = None
    try:
        node = SegmentationNode()
        executor = MultiThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ValueError as error:  # a parameter of the wrong type: say which, without a traceback
        print(f"maskclip_node: {error}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
