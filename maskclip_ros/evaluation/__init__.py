"""Evaluation (`maskclip-ros eval`): PQ/SQ/RQ, mIoU, mask AP; JSON and markdown reports."""
