"""The Ray Data engine for ``infer``, ``align`` and ``enroll``: same files, byte for byte, as the local engine."""
