from .adaptation_training import (
    AdaptationRun as AdaptationRun,
    train_from_records as train_from_records,
)
from .encoders import (
    DEFAULT_ENCODER as DEFAULT_ENCODER,
    Encoder as Encoder,
    EncoderSpec as EncoderSpec,
    build_encoder as build_encoder,
    cached_encoder as cached_encoder,
    mask_outside_boxes as mask_outside_boxes,
)
from .extract import (
    ExtractedPartition as ExtractedPartition,
    ExtractionOptions as ExtractionOptions,
    extract as extract,
    extract_shards as extract_shards,
    load_image_for as load_image_for,
)
from .feature_import import (
    ImportReport as ImportReport,
    import_features as import_features,
)
from .features import (
    DatabaseExport as DatabaseExport,
    FeatureFile as FeatureFile,
    expand_feature_paths as expand_feature_paths,
    export_database as export_database,
    feature_file_name as feature_file_name,
    read_features as read_features,
    write_features as write_features,
)
from .lifecycle import (
    AddReport as AddReport,
    DeletePlan as DeletePlan,
    add_images as add_images,
    collection_options as collection_options,
    delete_points as delete_points,
    encode_records as encode_records,
    plan_delete as plan_delete,
    read_id_file as read_id_file,
)
from .load import (
    LoadReport as LoadReport,
    VersionedLoad as VersionedLoad,
    load_collection as load_collection,
    load_versioned as load_versioned,
)
from .local_features import (
    LocalConfig as LocalConfig,
    LocalFeatures as LocalFeatures,
)
from .resolution import (
    resize_larger_side as resize_larger_side,
    resolution_for as resolution_for,
)
from .store import (
    CollectionConfig as CollectionConfig,
    CollectionInfo as CollectionInfo,
    EdgeStore as EdgeStore,
    Filter as Filter,
    Hit as Hit,
    Range as Range,
    SearchParams as SearchParams,
    ServerStore as ServerStore,
    SnapshotInfo as SnapshotInfo,
    Store as Store,
    open_store as open_store,
    point_id as point_id,
)
from .sync import (
    SyncReport as SyncReport,
    sync_collection as sync_collection,
)
