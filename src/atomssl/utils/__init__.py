"""Small shared utilities: atomic writes, run folders, configs, seeding."""

from ._config import apply_overrides, dump_config, load_config
from ._io import (
    atomic_save_npz,
    atomic_torch_save,
    atomic_write,
    make_run_dir,
    run_status,
    save_figure,
    write_csv,
    write_json,
)
from ._progress import progress_bar

__all__ = [
    "atomic_write",
    "atomic_save_npz",
    "atomic_torch_save",
    "make_run_dir",
    "run_status",
    "progress_bar",
    "write_json",
    "write_csv",
    "save_figure",
    "load_config",
    "apply_overrides",
    "dump_config",
]
