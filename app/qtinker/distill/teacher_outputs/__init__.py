"""Teacher outputs computed once: in memory (memory.MemoryTeacherOutputs), or kept on disk and read back
memory-mapped (disk.DiskTeacherOutputs over a store.OutputStore); the distillation loop reads either through
the protocol.TeacherOutputs protocol.

    protocol   TeacherOutputs: what the loop reads
    memory     MemoryTeacherOutputs: computed at the start of a run, held in memory
    disk       DiskTeacherOutputs and build_for_distill: the run's outputs from the disk cache (`--disk-cache`)
    store      the disk cache: OutputStore (reading, memory-mapped), load_or_build (writing), sweep_leftovers
    key        what a cache holds and depends on: OutputSpec, fingerprints, cache_key, root_dir
"""

from qtinker import _lazy_exports

_EXPORTS = {  # public name -> its module, imported on first use
    "TeacherOutputs": "qtinker.distill.teacher_outputs.protocol",
    "MemoryTeacherOutputs": "qtinker.distill.teacher_outputs.memory",
    "DiskTeacherOutputs": "qtinker.distill.teacher_outputs.disk",
    "build_for_distill": "qtinker.distill.teacher_outputs.disk",
    "OutputStore": "qtinker.distill.teacher_outputs.store",
    "ComputeRows": "qtinker.distill.teacher_outputs.store",
    "open_cache": "qtinker.distill.teacher_outputs.store",
    "load_or_build": "qtinker.distill.teacher_outputs.store",
    "sweep_leftovers": "qtinker.distill.teacher_outputs.store",
    "FORMAT_VERSION": "qtinker.distill.teacher_outputs.key",
    "WEIGHT_PATTERNS": "qtinker.distill.teacher_outputs.key",
    "DTYPES": "qtinker.distill.teacher_outputs.key",
    "OutputSpec": "qtinker.distill.teacher_outputs.key",
    "hash_file": "qtinker.distill.teacher_outputs.key",
    "teacher_fingerprint": "qtinker.distill.teacher_outputs.key",
    "module_fingerprint": "qtinker.distill.teacher_outputs.key",
    "data_fingerprint": "qtinker.distill.teacher_outputs.key",
    "cache_key": "qtinker.distill.teacher_outputs.key",
    "root_dir": "qtinker.distill.teacher_outputs.key",
    "cache_bytes": "qtinker.distill.teacher_outputs.key",
}
__all__ = sorted(_EXPORTS)

__getattr__ = _lazy_exports(__name__, _EXPORTS)
