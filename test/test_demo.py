"""Issue 8: a shortened `make demo` (a few frames of the generated bag, the demo's own params) runs end to
end and leaves the output bag, overlay images, GIF and summary."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from maskclip_ros.ros.bags import read_messages

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_short_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "MASKCLIP_DEMO_DOMAIN_ID": os.environ["ROS_DOMAIN_ID"]}
    done = subprocess.run([sys.executable, "-m", "maskclip_ros.cli", "demo", "--frames", "8", "--hz", "4",
                           "--out", str(out), "--timeout", "240"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    logs = "".join((out / f).read_text() for f in ("node.log", "replay.log", "record.log") if (out / f).exists())
    assert done.returncode == 0, done.stdout + done.stderr + logs

    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_in"] == 8
    assert 1 <= summary["frames_out"] <= 8
    counted = summary["node_counted"]  # the node's own /diagnostics counters at the end
    assert counted["frames_published"] == summary["frames_out"], "every published frame is in the output bag"
    assert counted["frames_received"] <= 8
    assert counted["frames_received"] == sum(counted[k] for k in ("frames_published", "dropped_frames",
                                                                   "dropped_bad_frames", "failed_frames"))
    assert summary["vocabulary_switch"]["version"] == 2
    assert set(summary["vocabularies"]) == {"1", "2"}
    assert summary["latency_ms"]["median"] > 0
    evaluated = [v for v in summary["pq"].values() if "frames" in v]
    assert evaluated and sum(v["frames"] for v in evaluated) == summary["frames_out"]
    # the trained small CLIP + RMA recognise something on held-out scenes (random weights score 0 here)
    assert max(v["all"]["pq"] or 0.0 for v in evaluated) > 5.0, summary["pq"]

    segments = read_messages(out / "output_bag", ["/maskclip/segments"])
    assert len(segments) == summary["frames_out"]
    assert {m.vocabulary_version for _, _, m in segments} <= {1, 2}
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) >= 1 and (out / "demo.gif").stat().st_size > 0
    assert "PQ" in (out / "summary.md").read_text()
