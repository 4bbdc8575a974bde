"""Data: procedural CT phantoms, LIDC nodule shapes, task sets on disk (and loaders)."""
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
from .tasks import (  # noqa: F401
    TASK_DEFAULTS,
    TASK_VERSION,
    TASKS,
    assign_splits,
    expected_auc,
    make_task,
    read_manifest,
    response_probability,
    task_params,
)
