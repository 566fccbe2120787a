"""The artifacts layer: the run directory is the only contract between the two phases.

Phase one writes it (`train`), phase two reads it (`inspect`), and both go through this
package: paths (`RunPaths`), atomic writes and locks (`atomic`), checkpoints and the one
checked `load_network` (`checkpoint`), and the validated readers of run.json, setup.json
and manifests (`run`).
"""
from .atomic import (atomic_path, broken_link, check_space, check_writable, created_folders, format_bytes, file_lock, h5_atomic,
                     is_no_space, is_writable, new_folder,
                     read_json, remove_stale_temps, remove_unused_folders, sha256_bytes, sha256_file,
                     write_bytes_atomic, write_json_atomic, _UMASK)  # noqa: F401
from .checkpoint import (CHECKPOINT_DTYPES, CHECKPOINT_FORMAT, check_header, header_meta, load_checkpoint,
                         load_network,
                         load_weights, network_shapes,
                         load_resume, resume_epoch, read_checkpoint_bytes, manifest_sha256, model_state, parse_checkpoint,
                         save_checkpoint, save_resume, unwrap, verified_bytes)
from .paths import EPOCH_RE, SEED_RE, RunPaths
from .tensorfile import Buffers, safetensors_bytes
from .run import (Run, SeedStatus, check_run_json_values, grid_status, load_run_config, read_manifest,
                  seed_status)

__all__ = [
    "atomic_path", "broken_link", "check_space", "check_writable", "created_folders", "format_bytes", "file_lock", "h5_atomic", "is_no_space", "is_writable", "new_folder", "read_json",
    "remove_stale_temps", "remove_unused_folders", "sha256_bytes", "sha256_file", "write_bytes_atomic",
    "write_json_atomic", "CHECKPOINT_DTYPES", "CHECKPOINT_FORMAT", "check_header", "header_meta", "load_checkpoint",
    "load_network", "load_weights", "network_shapes", "load_resume", "resume_epoch", "read_checkpoint_bytes", "manifest_sha256", "model_state", "parse_checkpoint",
    "Buffers", "safetensors_bytes", "save_checkpoint", "save_resume", "unwrap", "verified_bytes",
    "EPOCH_RE", "SEED_RE", "RunPaths", "Run", "SeedStatus", "grid_status", "load_run_config",
    "read_manifest", "seed_status", "check_run_json_values",
]
