"""Where a deployment requires it (TUNEOPS_REQUIRE_PERSISTENT_HOME=1, the Kubernetes job template),
a run refuses to start when $TUNEOPS_HOME is not on a mounted, persistent volume: a model packaged
into a pod's own filesystem would vanish with the pod."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tuneops.components.errors import StageError
from tuneops.components.persistent_home import check_persistent_home, mount_of, persistence_required

ROOT = Path(__file__).resolve().parents[2]
# /proc/self/mountinfo of a flow-run pod: the container's overlay root, a tmpfs, and the claim at /data.
POD = """\
1205 1100 0:310 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/var/lib/a,upperdir=/var/lib/b
1206 1205 0:312 / /proc rw,nosuid - proc proc rw
1210 1205 0:313 / /tmp rw,nosuid - tmpfs tmpfs rw
1215 1205 259:3 /volumes/pvc-1 /data rw,relatime - ext4 /dev/nvme1n1 rw
1216 1205 0:52 / /mnt/with\\040space rw - nfs4 server:/export rw
"""


def test_the_mount_holding_a_path_is_the_longest_matching_mount_point():
    assert mount_of("/data/runs/x", POD) == ("/data", "ext4")
    assert mount_of("/data", POD) == ("/data", "ext4")
    assert mount_of("/database", POD) == ("/", "overlay")  # a prefix of the name is not a parent
    assert mount_of("/tmp/home", POD) == ("/tmp", "tmpfs")
    assert mount_of("/mnt/with space/home", POD) == ("/mnt/with space", "nfs4")


def test_a_home_on_the_claim_passes_and_one_on_the_pods_own_filesystem_is_refused_in_one_line():
    check_persistent_home("/data", required=True, mountinfo=POD)
    check_persistent_home("/mnt/with space/home", required=True, mountinfo=POD)
    with pytest.raises(StageError, match=r"TUNEOPS_HOME /opt/state is on the container's own filesystem") as error:
        check_persistent_home("/opt/state", required=True, mountinfo=POD)
    assert "\n" not in str(error.value) and "TUNEOPS_REQUIRE_PERSISTENT_HOME" in str(error.value)
    with pytest.raises(StageError, match="tmpfs at /tmp, which does not persist"):
        check_persistent_home("/tmp/home", required=True, mountinfo=POD)
    check_persistent_home("/opt/state", required=False, mountinfo=POD)  # a laptop, a CI runner: no check


def test_mounts_that_cannot_be_read_refuse_the_run_in_one_line(monkeypatch, tmp_path):
    from tuneops.components import persistent_home

    monkeypatch.setattr(persistent_home, "MOUNTINFO", str(tmp_path / "no-mountinfo"))
    with pytest.raises(StageError, match=r"mounts cannot be read \(.*no-mountinfo: No such file or directory\)"):
        check_persistent_home("/data", required=True)
    check_persistent_home("/data", required=False)


def test_the_requirement_is_read_from_the_environment():
    assert persistence_required({"TUNEOPS_REQUIRE_PERSISTENT_HOME": "1"})
    assert persistence_required({"TUNEOPS_REQUIRE_PERSISTENT_HOME": "true"})
    assert not persistence_required({"TUNEOPS_REQUIRE_PERSISTENT_HOME": "0"})
    assert not persistence_required({})


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs /dev/shm (a tmpfs on Linux)")
def test_tuneops_run_refuses_a_home_that_does_not_persist_before_writing_anything():
    home = Path("/dev/shm") / f"tuneops-test-{uuid.uuid4().hex[:8]}"
    environment = {**os.environ, "TUNEOPS_HOME": str(home), "TUNEOPS_REQUIRE_PERSISTENT_HOME": "1",
                   "PREFECT_HOME": str(home / "prefect")}
    environment.pop("MLFLOW_TRACKING_URI", None)
    try:
        finished = subprocess.run([sys.executable, "-m", "tuneops.flows.cli", "run"], cwd=ROOT, env=environment,
                                  capture_output=True, text=True, timeout=300)
        assert finished.returncode != 0
        assert "tmpfs at /dev/shm, which does not persist" in finished.stderr, finished.stderr[-2000:]
        assert "Traceback" not in finished.stderr
        assert finished.stderr.strip().splitlines()[-1].startswith("error: TUNEOPS_HOME ")
        assert not (home / "runs").exists() and not (home / "bentoml").exists()
    finally:
        subprocess.run(["rm", "-rf", str(home)], check=False)
