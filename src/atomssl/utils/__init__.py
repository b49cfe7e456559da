"""Small shared utilities: atomic writes, run folders, configs, seeding."""

from ._io import atomic_write, atomic_save_npz, atomic_torch_save, make_run_dir, save_figure, write_csv, write_json
from ._config import load_config, apply_overrides, dump_config

__all__ = [
    "atomic_write",
    "atomic_save_npz",
    "atomic_torch_save",
    "make_run_dir",
    "write_json",
    "write_csv",
    "save_figure",
    "load_config",
    "apply_overrides",
    "dump_config",
]
