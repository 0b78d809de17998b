"""``python -m hashlib_vit ...`` is the ``hashlib-vit`` command (also under ``torchrun``:
``torchrun --nproc_per_node N -m hashlib_vit train --config ... --run-dir ...``)."""
import sys

from .cli import main

sys.exit(main())
