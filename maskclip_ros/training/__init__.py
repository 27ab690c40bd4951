"""RMA training (`maskclip-ros train`): loss, matching, coarse proposals, the training loop."""
