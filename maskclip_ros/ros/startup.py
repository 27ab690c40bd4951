"""What the node does at configure besides wiring: build the model core from its typed config, and say in
one log line what a robot engineer needs to know (model and weight files, device, vocabulary, topics); plus
the transport problem /diagnostics reports when frames do not arrive."""
from __future__ import annotations

from maskclip_ros.ros.interface import OUTPUT_TOPICS, SERVICE_NAME

LARGE_FRAMES_PROFILE = "config/fastdds_large_frames.xml"


def build_segmenter(config):
    """The model core's one factory (it checks device and precision and says what to fix)."""
    import torch  # lazily: `maskclip-ros --help` must not import torch

    from maskclip_ros.pipeline import build_segmenter as build

    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    return build(config)


def summary(node, config, vocabulary, image_backend: str) -> str:
    """The configure log line: model, weights, device, proposals, vocabulary and the resolved topic names."""
    from maskclip_ros.config import asset

    clip = config.clip
    weights = (str(asset(clip.checkpoint)) if clip.checkpoint else f"pretrained {clip.pretrained}"
               if clip.pretrained else "RANDOM weights (clip.random_init)")
    mode = config.maskclip.mode
    if config.maskclip.backend != "torch" and mode != "crop":
        mode += f" on {config.maskclip.backend}"
    if config.maskclip.mode == "rma":
        mode += f" ({asset(config.maskclip.rma_checkpoint)})" if config.maskclip.rma_checkpoint else " (untrained)"
    names = ", ".join(f"{n}{'' if t else ' (stuff)'}" for n, t in zip(vocabulary.class_names, vocabulary.is_thing))
    topics = ", ".join(node.resolve_topic_name(t) for t in OUTPUT_TOPICS.values())
    return (f"configured: CLIP {clip.model_name} with {weights}; MaskCLIP {mode}; {config.device} "
            f"{config.precision}; proposals {config.proposals.resolved_backend}; vocabulary v{vocabulary.version} "
            f"({len(vocabulary)} classes): {names}; outputs: {topics}; service "
            f"{node.resolve_service_name(SERVICE_NAME)}; image conversions via {image_backend}")


def diagnostics_info(config, vocabulary, image_backend: str) -> dict[str, str]:
    """The node's settings shown in /diagnostics (interface.INFO_KEYS)."""
    return {"device": config.device, "precision": config.precision,
            "model": f"{config.clip.model_name} / {config.maskclip.mode} / {config.maskclip.backend}",
            "image_backend": image_backend,
            "vocabulary_version": str(vocabulary.version if vocabulary else 0),
            "vocabulary_size": str(len(vocabulary) if vocabulary else 0)}


def transport_problem(inputs, stats) -> str:
    """"" when frames flow, else what is wrong and the fix (the diagnostics WARN message)."""
    received, published = stats.rate("received"), stats.rate("published")
    if received > 0 and published == 0:
        return "frames arrive but none are published"
    frames = inputs.frames if inputs is not None else None
    if frames is not None and received == 0 and frames.get_publisher_count() > 0:
        return (f"a publisher is matched on {frames.topic_name} but no frame arrived: large frames are lost by "
                f"Fast DDS's default transport; export FASTDDS_DEFAULT_PROFILES_FILE=<maskclip_ros share>/"
                f"{LARGE_FRAMES_PROFILE} for the camera driver and this node (the launch file sets it for the "
                f"node), or set qos_overrides.{frames.topic_name}.subscription.reliability: reliable")
    return ""
