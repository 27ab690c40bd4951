"""The maskclip_ros lifecycle node: camera frames in, panoptic labels, segments and an overlay out.

A thin adapter over the model core (``maskclip_ros.pipeline``). It declares the parameters of
config/default.yaml, turns them into one typed ``NodeConfig``, and wires ROS to the core: ``Inputs``
(subscriptions, conversions, stamp pairing), one inference worker thread, ``Outputs`` (publishers),
``VocabularyState`` (the vocabulary rules) and /diagnostics.

Lifecycle: configure builds the Segmenter and the initial vocabulary (a failure leaves the node unconfigured
and logs what to fix); activate creates the publishers, the worker and the subscriptions; deactivate stops
them; cleanup frees the models; shutdown stops everything and ends the process (exit code 0).
``autostart`` walks configure -> activate at startup.

Threads: subscription callbacks convert a frame and put it in a one-slot buffer (a frame the worker has not
started is replaced and counted as dropped); the ``InferenceWorker`` runs the model core (and the tracking
/ depth stage) on the newest frame, reading the config and the active vocabulary once per frame, so a change
applies between frames and never mixes two vocabularies.
"""
from __future__ import annotations

import gc
import signal
import sys
from typing import Any

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.task import Future

from maskclip_ros.model.vocabulary import VocabularyError
from maskclip_ros.ros import startup
from maskclip_ros.ros.conversions import ImageConverter
from maskclip_ros.ros.frames import LatestFrameSlot
from maskclip_ros.ros.inputs import Inputs
from maskclip_ros.ros.interface import NODE_NAME, SERVICE_NAME, status_name
from maskclip_ros.ros.node_config import NodeConfig, vocabulary_config
from maskclip_ros.ros.outputs import Outputs
from maskclip_ros.ros.params import descriptor, load_specs
from maskclip_ros.ros.stats import RollingStats, diagnostic_array
from maskclip_ros.tracking.stage import SegmentTracker
from maskclip_ros.ros.vocabulary_state import PARAMETERS as VOCABULARY_PARAMETERS, VocabularyState
from maskclip_ros.ros.worker import InferenceWorker
from maskclip_ros.srv import SetVocabulary

GIL_SWITCH_INTERVAL_S = 0.0005  # see run()
EXECUTOR_THREADS = 4  # frames, service and parameter callbacks never wait for each other
SIGNAL_CHECK_S = 0.1  # longest wait of the executor loop (a pending SIGINT is handled between waits)


class SegmentationNode(LifecycleNode):
    """Open-vocabulary panoptic segmentation node (see the module docstring)."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._specs = {s.name: s for s in load_specs()}
        self._declare()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._converter = ImageConverter()
        self._cfg = NodeConfig.from_parameters(self._values())  # replaced whenever a parameter changes
        self._vocabulary = VocabularyState(self._cfg.vocabulary)
        self.segmenter = self.perception = self._service = self._inputs = self._outputs = None
        self._slot: LatestFrameSlot | None = None
        self._worker: InferenceWorker | None = None
        self._timer = None
        self._stats = RollingStats(self._cfg.diagnostics.window)  # replaced at every configure
        self._frame_group, self._service_group = MutuallyExclusiveCallbackGroup(), ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self.finished = Future()  # done after the shutdown transition: the process should exit
        if self.get_parameter("autostart").value:
            self._call_soon(self._autostart)

    # ---------------------------------------------------------------- parameters
    def _declare(self) -> None:
        for spec in self._specs.values():
            if self.has_parameter(spec.name):  # e.g. use_sim_time, declared by rclpy itself
                continue
            try:
                self.declare_parameter(spec.name, spec.default, descriptor(spec))
            except InvalidParameterTypeException as error:
                raise ValueError(f"parameter {spec.name!r} must be a {type(spec.default).__name__} like its "
                                 f"default {spec.default!r} in config/default.yaml: {error}") from None
            except InvalidParameterValueException as error:  # outside the range in its descriptor
                raise ValueError(f"parameter {spec.name!r}: {error}") from None

    def _values(self) -> dict[str, Any]:
        return {name: self.get_parameter(name).value for name in self._specs}


    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validates and applies runtime changes; vocabulary changes follow the service's rules."""
        changes = {p.name: p.value for p in params if p.name in self._specs}
        vocabulary_changed = any(name in VOCABULARY_PARAMETERS for name in changes)
        values = {**self._values(), **changes}
        try:
            if self.segmenter is None:  # unconfigured: configure checks the whole; vocabulary rules apply now
                if vocabulary_changed:
                    self._vocabulary.check_parameters(changes, self._values(), vocabulary_config(values))
                return SetParametersResult(successful=True)
            frozen = sorted(name for name in changes if self._specs[name].kind == "configure")
            if frozen:
                return SetParametersResult(successful=False, reason=(
                    f"{', '.join(frozen)} apply at configure: deactivate and clean up the node, set them, then "
                    "configure again"))
            config = NodeConfig.from_parameters(values)
            if vocabulary_changed and (new := self._vocabulary.from_parameters(changes, self._values())):
                self._vocabulary_changed(new)
                self._call_soon(self._sync_vocabulary_parameters)  # parameters cannot be set from in here
            self.segmenter.set_merge_config(config.merge)
            self.perception.set_config(config.perception())
            self._cfg = config
        except (ValueError, TypeError) as error:  # VocabularyError and ConfigError are ValueErrors
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def _call_soon(self, function) -> None:
        """Run ``function`` once from the executor, as soon as possible (a one-shot timer)."""
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
        try:
            config = self._cfg = NodeConfig.from_parameters(self._values())
            self._stats = RollingStats(config.diagnostics.window)
            self.segmenter = startup.build_segmenter(config)
            self.perception = SegmentTracker(config=config.perception())
            vocabulary = self._vocabulary.attach(self.segmenter, config.vocabulary)
        except Exception as error:  # noqa: BLE001 - every configure failure must end in a clear log
            self.segmenter = None
            self._vocabulary.detach()
            self.get_logger().error(f"configure failed, staying unconfigured: {type(error).__name__}: {error}. "
                                    "Fix the parameter (e.g. with a params file or ros2 param set) and trigger "
                                    "configure again.")
            return TransitionCallbackReturn.FAILURE
        self._service = self.create_service(SetVocabulary, SERVICE_NAME, self._on_set_vocabulary,
                                            callback_group=self._service_group)
        self.get_logger().info(startup.summary(self, config, vocabulary, self._converter.backend))
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        config = self._cfg
        self._outputs = Outputs(self, depth=config.output_depth, converter=self._converter,
                                with_depth=config.depth.enabled, cloud=config.depth.publish_cloud)
        self._slot = LatestFrameSlot()
        self._inputs = Inputs(self, converter=self._converter, stats=self._stats, slot=self._slot,
                              compressed=config.compressed_input, group=self._frame_group,
                              external=config.proposals.resolved_backend == "external",
                              external_queue=config.external_queue,
                              depth_queue=config.depth.queue if config.depth.enabled else None)
        self._worker = InferenceWorker(slot=self._slot, node=self, outputs=self._outputs, inputs=self._inputs,
                                       stats=self._stats)
        self._timer = self.create_timer(config.diagnostics.period, self._publish_diagnostics,
                                        callback_group=self._timer_group)
        self._outputs.vocabulary(self._vocabulary.active, config.merge.object_mask_threshold)
        self.get_logger().info(f"active: listening on {self._inputs.frames.topic_name}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        self.get_logger().info("inactive: subscriptions and publishers removed")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._free_models()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        self._free_models()
        self.finished.set_result(True)
        return TransitionCallbackReturn.SUCCESS

    def _free_models(self) -> None:
        if self._service is not None:
            self.destroy_service(self._service)
            self._service = None
        on_cuda = self.segmenter is not None and self.segmenter.device.type == "cuda"
        self.segmenter = self.perception = None
        self._vocabulary.detach()
        gc.collect()
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    def stop(self) -> None:
        """Unsubscribe, finish the frame in flight, then remove the publishers (safe in any state): nothing
        is ever published after this returns."""
        if self._inputs is not None:
            self._inputs.close()
        if self._slot is not None:
            self._slot.close()
        if self._worker is not None:
            self._worker.join()
        if self._timer is not None:
            self.destroy_timer(self._timer)
        if self._outputs is not None:
            self._outputs.close()
        self._inputs = self._slot = self._worker = self._timer = self._outputs = None

    # ---------------------------------------------------------------- what the worker reads
    @property
    def config(self) -> NodeConfig:
        return self._cfg

    @property
    def vocabulary(self):
        return self._vocabulary.active

    # ---------------------------------------------------------------- vocabulary
    def _on_set_vocabulary(self, request, response):
        try:
            vocabulary = self._vocabulary.request(request.class_names, request.is_thing, request.prompt_templates)
        except VocabularyError as error:
            response.success, response.message = False, f"refused: {error.reason}"
            vocabulary = self._vocabulary.active
        else:
            self._vocabulary_changed(vocabulary)
            response.success, response.message = True, f"vocabulary v{vocabulary.version} active"
            self._call_soon(self._sync_vocabulary_parameters)
        if vocabulary is not None:
            response.version, response.class_names = int(vocabulary.version), list(vocabulary.class_names)
        return response

    def _vocabulary_changed(self, vocabulary) -> None:
        self.get_logger().info(f"vocabulary v{vocabulary.version}: {', '.join(vocabulary.class_names)}")
        if self._outputs is not None:
            self._outputs.vocabulary(vocabulary, self._cfg.merge.object_mask_threshold)

    def _sync_vocabulary_parameters(self) -> None:
        """The vocabulary.* parameters show the active vocabulary (plain names, its flags)."""
        if (active := self._vocabulary.active) is not None:
            values = VocabularyState.parameter_values(active)
            self.set_parameters_atomically([Parameter(name, value=value) for name, value in values.items()])

    # ---------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        if (outputs := self._outputs) is None:
            return
        info = startup.diagnostics_info(self._cfg, self._vocabulary.active, self._converter.backend)
        outputs.diagnostics(diagnostic_array(
            self._stats, name=status_name(self.get_fully_qualified_name()), hardware_id=self._cfg.device,
            stamp=self.get_clock().now().to_msg(), info=info, problem=startup.transport_problem(self._inputs, self._stats)))


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run(ros_args: list[str]) -> int:
    """Run the node until SIGINT or the lifecycle shutdown transition (`maskclip-ros node`)."""
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    # The worker runs Python between torch kernels; a short GIL switch interval keeps the executor threads
    # (frame, service and parameter callbacks) from waiting 5 ms per hand-over.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    # No rclpy signal handlers: they would shut the context down while a frame is in flight (publishing on a
    # dead context). SIGINT (Ctrl-C, ros2 launch) and SIGTERM (docker stop, systemd) raise KeyboardInterrupt,
    # which stops the node first, then ROS; set here, so an ignored SIGINT inherited from a background shell
    # does not make the node unstoppable.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    rclpy.init(args=["maskclip_node", *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = SegmentationNode()
        executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
        executor.add_node(node)
        while not node.finished.done():  # a bounded wait, so Ctrl-C is seen even when nothing else happens
            executor.spin_once(timeout_sec=SIGNAL_CHECK_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ValueError as error:  # a parameter of the wrong type: say which, without a traceback
        print(f"maskclip_node: {error}", file=sys.stderr)
        return 2
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut the cleanup short
            signal.signal(signum, signal.SIG_IGN)
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
