"""Resolves credentials and region the way botocore does on EC2, against the IMDS endpoint in
AWS_EC2_METADATA_SERVICE_ENDPOINT, and prints them as one JSON object:
{"method", "access_key_id", "secret_access_key", "token", "region"}.

Credentials come from botocore's own provider chain (the caller leaves only IMDS for it to find);
the region from botocore's IMDSRegionProvider, which reads placement/availability-zone/. botocore
itself reads AWS_EC2_METADATA_SERVICE_ENDPOINT, AWS_EC2_METADATA_V1_DISABLED and the other AWS_*
variables; its IMDS defaults are already short (1 s timeout, 1 attempt), so nothing is overridden.
Exits 1 with a one-line error on stderr when either cannot be resolved.
"""

import json
import sys

import botocore.session
from botocore.utils import IMDSRegionProvider


def resolve():
    session = botocore.session.Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise LookupError("the credential chain found no credentials")
    frozen = credentials.get_frozen_credentials()
    region = IMDSRegionProvider(session).provide()
    if not region:
        raise LookupError("IMDSRegionProvider found no region")
    return {
        "method": credentials.method,
        "access_key_id": frozen.access_key,
        "secret_access_key": frozen.secret_key,
        "token": frozen.token,
        "region": region,
    }


def main():
    try:
        result = resolve()
    except Exception as error:  # one line for the caller, whatever botocore raised
        print(f"botocore failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
