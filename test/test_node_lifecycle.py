"""Issue 7, lifecycle (cross-process): a missing checkpoint leaves the node unconfigured with a clear
message; the parameter can then be fixed and configure retried; deactivate stops processing and activate
resumes it; cleanup frees the model and its service."""
import pytest
import torch

from helpers.node_harness import Transition, check_segmentation, node_session, scene, write_params

pytestmark = pytest.mark.ros
MISSING = "/nonexistent/maskclip/clip-weights.pt"


def _frame_goes_through(peer, sec: int) -> None:
    rgb, labels = scene(sec)
    peer.publish(rgb, labels, (sec, 0))
    check_segmentation(*peer.wait_outputs((sec, 0)), labels, list(peer.vocabularies[-1].class_names))


def test_lifecycle_missing_checkpoint_then_fix_deactivate_activate(tmp_path, ros_isolation):
    params = write_params(tmp_path / "params.yaml", {"clip": {"checkpoint": MISSING, "random_init": False}})
    with node_session(tmp_path, params, name="lifecycle") as (node, peer):
        peer.spin_until(lambda: "configure failed" in node.log(), 90, "the configure failure")
        assert peer.state() == "unconfigured"
        log = node.log()
        assert MISSING in log and "staying unconfigured" in log and "configure again" in log
        assert node.alive()
        (result,) = peer.set_parameters(vocabulary__class_names=["ring", "Ring"] + ["x"] * 12)
        assert not result.successful and "duplicate class name 'Ring'" in result.reason, \
            "vocabulary rules apply while unconfigured too"

        # CUDA on a machine without it: refused at configure with a clear reason.
        results = peer.set_parameters(device="cuda", clip__checkpoint="", clip__random_init=True)
        assert all(r.successful for r in results), "configure parameters are settable while unconfigured"
        if torch.cuda.is_available():
            assert peer.transition(Transition.TRANSITION_CONFIGURE)
            assert peer.transition(Transition.TRANSITION_CLEANUP)
        else:
            assert not peer.transition(Transition.TRANSITION_CONFIGURE)
            peer.spin_until(lambda: "CUDA is not available" in node.log(), 10, "the CUDA message")
        assert peer.state() == "unconfigured"

        (result,) = peer.set_parameters(device="cpu")
        assert result.successful
        assert peer.transition(Transition.TRANSITION_CONFIGURE) and peer.state() == "inactive"
        assert peer.image_pub.get_subscription_count() == 0, "inactive: no subscription yet"
        assert peer.transition(Transition.TRANSITION_ACTIVATE) and peer.state() == "active"
        peer.wait_active()
        _frame_goes_through(peer, 1)

        assert peer.transition(Transition.TRANSITION_DEACTIVATE) and peer.state() == "inactive"
        peer.spin_until(lambda: peer.image_pub.get_subscription_count() == 0
                        and peer.node.count_publishers("/maskclip/segments") == 0, 20, "the node to stop")
        (result,) = peer.set_parameters(device="cuda")
        assert not result.successful and "apply at configure" in result.reason, "still configured"

        assert peer.transition(Transition.TRANSITION_ACTIVATE)
        peer.wait_active()
        _frame_goes_through(peer, 2)

        assert peer.transition(Transition.TRANSITION_DEACTIVATE)
        assert peer.transition(Transition.TRANSITION_CLEANUP) and peer.state() == "unconfigured"
        peer.spin_until(lambda: "/maskclip/set_vocabulary" not in dict(peer.node.get_service_names_and_types()),
                        20, "the vocabulary service to go")
