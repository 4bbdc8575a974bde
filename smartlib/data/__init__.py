"""Data: procedural CT phantoms, LIDC nodule shapes, task sets on disk, and real-format readers.

Layers, bottom up: :mod:`.validate` (argument checks), :mod:`.readers` (one volume file or DICOM
series -> array), :mod:`.manifest` (the manifest CSV reader), :mod:`.sources` (any data path ->
records), :mod:`.checks` (``smart data check``), :mod:`.transforms` (records -> tensors; not
imported here, it needs torch and MONAI), and the generators :mod:`.phantom`, :mod:`.lidc` and
:mod:`.tasks`.
"""
from .phantom import (  # noqa: F401
    KERNELS,
    ORGAN_CLASSES,
    SLICE_MM,
    TISSUE_CLASSES,
    Acquisition,
    NoduleSpec,
    Phantom,
    Subject,
    TumourSpec,
    apply_acquisition,
    insert_lesion,
    make_phantom,
    make_subject,
    tumour_mask,
)
from .lidc import (  # noqa: F401
    LABEL_RULES,
    RATING_NAMES,
    LidcContour,
    NoduleRecord,
    lidc_db_path,
    load_annotations,
    malignancy_label,
    nodule_hu,
    rasterise,
)
from .readers import (  # noqa: F401
    NIFTI_SUFFIXES,
    NRRD_SUFFIXES,
    find_volumes,
    is_dicom_series_dir,
    is_volume_file,
    load_volume,
    volume_format,
    volume_stem,
)
from .manifest import read_manifest, read_manifest_rows  # noqa: F401
from .sources import (  # noqa: F401
    RECORD_TASKS,
    classify_path,
    decathlon_records,
    folder_records,
    load_medmnist,
    medmnist_records,
    resolve_data,
)
from .checks import check_path, check_record  # noqa: F401
from .tasks import (  # noqa: F401
    TASK_DEFAULTS,
    TASK_VERSION,
    TASKS,
    assign_splits,
    expected_auc,
    make_task,
    response_probability,
    task_params,
)
