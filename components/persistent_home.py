"""The check that ``$TUNEOPS_HOME`` is on storage that outlives the process, where a deployment
asks for it (``TUNEOPS_REQUIRE_PERSISTENT_HOME=1``, set by infra/kubernetes' job template).

A Kubernetes flow-run pod whose volume was not mounted still has a ``/data`` folder: the
container's own, ephemeral filesystem. A retrain there would package and promote a model into
it, and the model would vanish with the pod, with nothing saying so. So where the deployment
says the home must be persistent, the run refuses to start unless the home is on a mounted
volume: a mount other than the container's root, of a file system that is not memory-backed.
"""

from __future__ import annotations

import os
from pathlib import Path

from tuneops.components.errors import StageError

REQUIRE_ENV = "TUNEOPS_REQUIRE_PERSISTENT_HOME"
# File systems that live in memory or in the container's writable layer: gone with the pod.
EPHEMERAL_TYPES = frozenset({"tmpfs", "ramfs", "overlay", "aufs", "devtmpfs"})
MOUNTINFO = "/proc/self/mountinfo"


def persistence_required(environ: dict[str, str] | None = None) -> bool:
    """Whether the deployment asked for a persistent home (``TUNEOPS_REQUIRE_PERSISTENT_HOME`` 1/true/yes)."""
    value = (environ if environ is not None else os.environ).get(REQUIRE_ENV, "")
    return value.strip().lower() in {"1", "true", "yes"}


def mount_of(path: str | Path, mountinfo: str | None = None) -> tuple[str, str]:
    """The mount point holding ``path`` and its file system type, from ``/proc/self/mountinfo``
    (``mountinfo`` in tests): the longest mount point that is a prefix of the resolved path."""
    if mountinfo is None:
        mountinfo = Path(MOUNTINFO).read_text()
    target = Path(path).resolve()
    best = ("/", "unknown")
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields or len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        fstype = fields[fields.index("-") + 1]
        if (target == Path(point) or Path(point) in target.parents) and len(point) >= len(best[0]):
            best = (point, fstype)
    return best


def check_persistent_home(home: str | Path, required: bool, mountinfo: str | None = None) -> None:
    """Raise StageError (one line) when ``required`` and ``home`` is not on a mounted, persistent
    file system; nothing when not required."""
    if not required:
        return
    try:
        point, fstype = mount_of(home, mountinfo)
    except OSError as error:
        # Asked to make sure and unable to look: refuse, as for a home known to be ephemeral.
        raise StageError(f"{REQUIRE_ENV} is set but the mounts cannot be read ({MOUNTINFO}: "
                         f"{error.strerror}), so TUNEOPS_HOME's storage cannot be checked") from None
    if point == "/" or fstype in EPHEMERAL_TYPES:
        where = "the container's own filesystem" if point == "/" else f"{fstype} at {point}, which does not persist"
        raise StageError(
            f"TUNEOPS_HOME {home} is on {where}: a model packaged there would be lost with the pod, so the run "
            f"does not start; mount the state volume there (infra/kubernetes/base-job-template.json) or unset "
            f"{REQUIRE_ENV}")
