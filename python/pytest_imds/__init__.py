"""imds, an EC2-compatible Instance Metadata Service, for tests.

In pytest (the plugin loads itself once the package is installed)::

    @pytest.mark.imds(http_tokens="required", role="ci-runner")
    def test_my_code_on_ec2(imds):
        assert my_code() ...            # the AWS SDKs find imds through AWS_EC2_METADATA_SERVICE_ENDPOINT
        imds.spot_interrupt()           # and the test drives it: options, tags, faults, events

Elsewhere (unittest, scripts), the same as a context manager::

    with pytest_imds.Imds(user_data="#!/bin/sh") as imds:
        ...
"""

from ._server import ControlError, Imds, ImdsStartError, Instance, find_binary

__all__ = ["ControlError", "Imds", "ImdsStartError", "Instance", "find_binary"]
