"""Resolves credentials and region the way botocore does on EC2, against the IMDS endpoint in
AWS_EC2_METADATA_SERVICE_ENDPOINT, and prints them as one JSON object.

Credentials come from botocore's own provider chain (the caller leaves only IMDS to find);
the region from botocore's IMDSRegionProvider. AWS_EC2_METADATA_V1_DISABLED and the other
AWS_* variables are read by botocore itself.
"""

import json
import sys

import botocore.session
from botocore.utils import IMDSRegionProvider


def main():
    session = botocore.session.Session()
    credentials = session.get_credentials()
    if credentials is None:
        print("botocore found no credentials", file=sys.stderr)
        return 1
    frozen = credentials.get_frozen_credentials()
    region = IMDSRegionProvider(session).provide()
    print(
        json.dumps(
            {
                "method": credentials.method,
                "access_key_id": frozen.access_key,
                "secret_access_key": frozen.secret_key,
                "token": frozen.token,
                "region": region,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
