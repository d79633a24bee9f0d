"""The AWS glue of the serving library: what meets API Gateway and Lambda, beside the core.

    lambda_adapter      the Powertools resolvers of a function: routes bound to the core's
                        operations, every failure turned into the protocol's error response
    router              the server function's model routes: the API Gateway event forwarded
                        to the model's own function
    invoke              the Lambda Invoke API (boto3, imported only when first used)
    invoked_repository  the server function's repository index: each model version's ready
                        route asked of its function

The core (model_api's other modules) imports none of these, nor boto3, botocore or Powertools
(tests/architecture/test_core_free_of_aws.py).
"""
