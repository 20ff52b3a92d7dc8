"""Starts moto's server (the ASL engine of these tests) with room for deep recursion.

moto's interpreter evaluates an inline Map's iterations through nested calls, about one more
level per iteration: past roughly 950 iterations it hits Python's default recursion limit
(1,000) and fails the execution with States.Runtime "maximum recursion depth exceeded". The
definition runs up to 2,000 iterations, so the engine's process gets a higher limit and larger
thread stacks; its code is untouched. Its ECS and Step Functions integrations are completed in this process (see
complete_the_ecs_integration, complete_the_sfn_integration)."""

import sys
import threading

sys.setrecursionlimit(1_000_000)
threading.stack_size(1024 * 1024 * 1024)  # virtual: pages are committed only when used

from moto.server import main  # noqa: E402


def complete_the_ecs_integration() -> None:
    """moto 5.2.5 runs `arn:aws:states:::ecs:runTask.sync` with the code it took from
    LocalStack's interpreter, but without its request and response normalisation (the base
    class's `_normalise_parameters` / `_normalise_response` are no-ops in moto): the state's
    PascalCase parameters reach botocore's serializer as they are (`KeyError: 'Cluster'`,
    States.Runtime), and the integration reads `Tasks`/`TaskArn` from a response that has
    `tasks`/`taskArn`. The methods are completed here, on the ECS integration's class, in the
    engine's process, with the class's own helpers, as LocalStack does it (botocore's model of
    the operation); the installed package is not edited."""
    import botocore.session
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_ecs as ecs_service)
    from moto.stepfunctions.parser.utils import camel_to_snake_case

    model = botocore.session.get_session().get_service_model("ecs")
    operations = {camel_to_snake_case(name): name for name in model.operation_names}

    def operation(task, action):
        return model.operation_model(operations[camel_to_snake_case(action or task.resource.api_action)])

    def normalise_parameters(self, parameters, boto_service_name=None, service_action_name=None):
        shape = operation(self, service_action_name).input_shape
        if shape is not None:
            self._to_boto_request(parameters, shape)

    def normalise_response(self, response, boto_service_name=None, service_action_name=None):
        shape = operation(self, service_action_name).output_shape
        if shape is not None:
            self._from_boto_response(response, shape)

    ecs_service.StateTaskServiceEcs._normalise_parameters = normalise_parameters
    ecs_service.StateTaskServiceEcs._normalise_response = normalise_response


def complete_the_sfn_integration() -> None:
    """The same gap in `arn:aws:states:::states:startExecution` (StartContinuation): the state's
    PascalCase `StateMachineArn`/`Name`/`Input` reach botocore as they are (`KeyError:
    'StateMachineArn'`, States.Runtime), and the response keeps boto's `executionArn` where
    Step Functions answers `ExecutionArn`. Completed the same way (the class's own Input
    encoding first, then botocore's model of the operation)."""
    import botocore.session
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_sfn as sfn_service)
    from moto.stepfunctions.parser.utils import camel_to_snake_case

    model = botocore.session.get_session().get_service_model("stepfunctions")
    operations = {camel_to_snake_case(name): name for name in model.operation_names}
    encode_input = sfn_service.StateTaskServiceSfn._normalise_parameters

    def operation(task, action):
        return model.operation_model(operations[camel_to_snake_case(action or task.resource.api_action)])

    def normalise_parameters(self, parameters, boto_service_name=None, service_action_name=None):
        encode_input(self, parameters, boto_service_name, service_action_name)
        shape = operation(self, service_action_name).input_shape
        if shape is not None:
            self._to_boto_request(parameters, shape)

    def normalise_response(self, response, boto_service_name=None, service_action_name=None):
        shape = operation(self, service_action_name).output_shape
        if shape is not None:
            self._from_boto_response(response, shape)

    sfn_service.StateTaskServiceSfn._normalise_parameters = normalise_parameters
    sfn_service.StateTaskServiceSfn._normalise_response = normalise_response


complete_the_ecs_integration()
complete_the_sfn_integration()

if __name__ == "__main__":
    sys.exit(main())
