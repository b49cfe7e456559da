"""Order in self-assembly: per-particle SSL embeddings vs Steinhardt order parameters.

- :func:`frame_clouds`, :func:`cloud_batch`, :func:`embed_clouds`: neighbour clouds -> embeddings;
- :func:`steinhardt_features`, :func:`solid_fraction`: the freud baseline;
- :func:`pretrain_clouds`: a small self-supervised loop on subsampled environments;
- :func:`liquid_classification` (experiment a), :func:`transfer` (experiment b),
  :func:`analyse_trajectory` (``atomssl order``, experiment c).
"""

from ._analysis import analyse_trajectory, onset
from ._classify import (
    OrderClassifier,
    default_order_checkpoint,
    fit_classifier,
    load_order_backbone,
)
from ._clouds import PARTICLE_Z, cloud_batch, embed_clouds, frame_clouds, pad_clouds
from ._distil import distil
from ._experiments import (
    CLASSIFIERS,
    liquid_classification,
    liquid_frames,
    transfer,
)
from ._pretrain import (
    DEFAULT_BACKBONE,
    DEFAULT_TASKS,
    PretrainSettings,
    pretrain_clouds,
    save_pretrained,
)
from ._reference import (
    HELD_OUT_PROTOTYPES,
    SIGMAS,
    ReferenceClouds,
    ReferenceEmbeddings,
    reference_clouds,
    reference_embeddings,
)
from ._steinhardt import (
    STEINHARDT_FEATURES,
    frame_steinhardt,
    freud_system,
    knn_neighbors,
    particle_q6,
    solid_fraction,
    steinhardt_features,
)
from ._student import OrderStudent, load_student, save_student
from ._transfer_heads import TRANSFER_SPLITS

__all__ = [
    "PARTICLE_Z",
    "cloud_batch",
    "embed_clouds",
    "frame_clouds",
    "pad_clouds",
    "STEINHARDT_FEATURES",
    "freud_system",
    "frame_steinhardt",
    "knn_neighbors",
    "particle_q6",
    "solid_fraction",
    "steinhardt_features",
    "OrderClassifier",
    "default_order_checkpoint",
    "fit_classifier",
    "load_order_backbone",
    "OrderStudent",
    "distil",
    "load_student",
    "save_student",
    "HELD_OUT_PROTOTYPES",
    "SIGMAS",
    "ReferenceClouds",
    "ReferenceEmbeddings",
    "reference_clouds",
    "reference_embeddings",
    "DEFAULT_BACKBONE",
    "DEFAULT_TASKS",
    "PretrainSettings",
    "pretrain_clouds",
    "save_pretrained",
    "analyse_trajectory",
    "onset",
    "CLASSIFIERS",
    "TRANSFER_SPLITS",
    "liquid_classification",
    "liquid_frames",
    "transfer",
]
