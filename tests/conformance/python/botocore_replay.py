"""Captures one request signed by botocore's unmodified SigV4 signer and replays it as an
attacker would: within the signature's 15 minutes, with another body and the original payload
hash in `X-Amz-Content-SHA256`.

  botocore_replay.py CONTROL_URL INSTANCE_ID

Prints one JSON object: the status and error code of the request as signed, and of each replay
({"signed": [status, code], "replays": {action: [status, code]}}).
"""

import hashlib
import json
import re
import sys
import urllib.error
import urllib.request

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

control, instance = sys.argv[1], sys.argv[2]
credentials = Credentials(
    "AKIAIMDSCONTROLTEST1", "imds-control-test-secret-key-0123456789ab"
)
describe = b"Action=DescribeInstances&Version=2016-11-15"
request = AWSRequest(
    method="POST",
    url=control + "/",
    data=describe,
    headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
)
SigV4Auth(credentials, "ec2", "us-east-1").add_auth(request)
captured = dict(request.headers.items())


def send(body, extra):
    headers = dict(captured)
    headers.update(extra)
    sent = urllib.request.Request(control + "/", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(sent) as answer:
            return [answer.status, None]
    except urllib.error.HTTPError as refused:
        text = refused.read().decode()
        code = re.search(r"<Code>([^<]*)</Code>", text)
        return [refused.code, code.group(1) if code else None]


original_hash = hashlib.sha256(describe).hexdigest()
replays = {
    "ModifyInstanceMetadataOptions": "Action=ModifyInstanceMetadataOptions&Version=2016-11-15"
    f"&InstanceId={instance}&HttpEndpoint=disabled",
    "TerminateInstances": f"Action=TerminateInstances&Version=2016-11-15&InstanceId.1={instance}",
    "RotateKeys": "Action=RotateKeys&Version=2016-11-15",
}
result = {
    "replays": {
        action: send(body.encode(), {"X-Amz-Content-SHA256": original_hash})
        for action, body in replays.items()
    },
    "signed": send(describe, {}),
}
print(json.dumps(result))
