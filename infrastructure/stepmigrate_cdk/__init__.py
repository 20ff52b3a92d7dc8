"""stepmigrate's AWS CDK construct: PostgreSQL migrations applied by a Step Functions state
machine of Rust Lambda workers, during the deployment that changes the migration set."""

from .construct import (
    AFTER_DEPLOY_INPUT,
    DEFINITION_PLACEHOLDERS,
    FUNCTION_PLACEHOLDERS,
    TASK_CONTAINER_NAME,
    TASK_PLACEHOLDERS,
    DefinitionError,
    StepMigrate,
    StepMigrateProps,
    TimeoutsError,
)
from .packaging import (
    ARCHITECTURE_CONTEXT_KEY,
    DEFAULT_CA_BUNDLE,
    PackagingError,
    WorkerPackages,
    build_worker_packages,
    choose_architecture,
    migration_set_digest,
    write_task_image,
)

__all__ = [
    "AFTER_DEPLOY_INPUT",
    "ARCHITECTURE_CONTEXT_KEY",
    "DEFAULT_CA_BUNDLE",
    "DEFINITION_PLACEHOLDERS",
    "FUNCTION_PLACEHOLDERS",
    "TASK_CONTAINER_NAME",
    "TASK_PLACEHOLDERS",
    "DefinitionError",
    "PackagingError",
    "StepMigrate",
    "StepMigrateProps",
    "TimeoutsError",
    "WorkerPackages",
    "build_worker_packages",
    "choose_architecture",
    "migration_set_digest",
    "write_task_image",
]
