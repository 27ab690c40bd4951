"""`maskclip-ros` subcommands of the ROS part: node, replay, record, set-vocabulary, bench-node. Each module
has `register(subparsers)`; heavy imports (rclpy, torch) happen inside the command, not at registration."""
