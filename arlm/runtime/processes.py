"""Whether a process still runs: how temporary files of killed writers are told from live ones."""

import os


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists on this machine (owned by anyone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
