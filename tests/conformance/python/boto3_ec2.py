"""Drives imds' control API with boto3's unmodified ec2 client and watches the guest API.

  boto3_ec2.py CONTROL_URL GUEST_URL

Runs every control action the way a boto3 user would (describe, metadata options, tags, IAM
instance profile associations, account defaults, errors) and prints one JSON object of what
boto3 and the guest API answered at each step, for the Rust test to check. The instance must
serve tags in IMDS (InstanceMetadataTags enabled) and start with the default role.
"""

import json
import sys
import time
import urllib.error
import urllib.request

import boto3
from botocore.exceptions import ClientError

control, guest = sys.argv[1], sys.argv[2]
ec2 = boto3.client(
    "ec2",
    endpoint_url=control,
    region_name="us-east-1",
    aws_access_key_id="AKIAIMDSBOTO3TEST001",
    aws_secret_access_key="boto3-control-test-secret",
)
seen = {}


def guest_get(path, token=None):
    """Status and body of a guest GET, with a token when given."""
    request = urllib.request.Request(guest + path)
    if token:
        request.add_header("X-aws-ec2-metadata-token", token)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return [response.status, response.read().decode()]
    except urllib.error.HTTPError as error:
        return [error.code, error.read().decode()]


def token():
    request = urllib.request.Request(
        guest + "/latest/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode()


def error_code(call, **kwargs):
    try:
        call(**kwargs)
    except ClientError as error:
        return error.response["Error"]["Code"]
    return None


def instance():
    return ec2.describe_instances()["Reservations"][0]["Instances"][0]


first = instance()
instance_id = first["InstanceId"]
seen["instance_id"] = instance_id
seen["state"] = first["State"]["Name"]
seen["zone"] = first["Placement"]["AvailabilityZone"]
seen["profile_arn"] = first["IamInstanceProfile"]["Arn"]
seen["options_before"] = first["MetadataOptions"]
seen["unknown_instance"] = error_code(ec2.describe_instances, InstanceIds=["i-0123456789abcdef0"])
seen["malformed_instance"] = error_code(ec2.describe_instances, InstanceIds=["web-1"])


def required_count():
    filters = [{"Name": "metadata-options.http-tokens", "Values": ["required"]}]
    return len(ec2.describe_instances(Filters=filters)["Reservations"])


seen["required_before"] = required_count()
seen["v1_before"] = guest_get("/latest/meta-data/instance-id")[0]
seen["dry_run"] = error_code(
    ec2.modify_instance_metadata_options, InstanceId=instance_id, HttpTokens="required", DryRun=True
)
seen["bad_hop_limit"] = error_code(
    ec2.modify_instance_metadata_options, InstanceId=instance_id, HttpPutResponseHopLimit=65
)
modified = ec2.modify_instance_metadata_options(
    InstanceId=instance_id, HttpTokens="required", HttpPutResponseHopLimit=2
)
seen["modify_answer"] = modified["InstanceMetadataOptions"]
start = time.monotonic()
while guest_get("/latest/meta-data/instance-id")[0] != 401 and time.monotonic() - start < 5:
    time.sleep(0.01)
seen["v1_after"] = guest_get("/latest/meta-data/instance-id")[0]
seen["seconds_to_401"] = time.monotonic() - start
seen["required_after"] = required_count()
time.sleep(0.6)
seen["options_after"] = instance()["MetadataOptions"]

t = token()
ec2.create_tags(Resources=[instance_id], Tags=[{"Key": "Team", "Value": "payments"}])
seen["tag_in_imds"] = guest_get("/latest/meta-data/tags/instance/Team", t)
seen["described_tags"] = ec2.describe_tags(
    Filters=[{"Name": "resource-id", "Values": [instance_id]}, {"Name": "key", "Values": ["Team"]}]
)["Tags"]
seen["unshowable_tag"] = error_code(
    ec2.create_tags, Resources=[instance_id], Tags=[{"Key": "a/b", "Value": "x"}]
)
ec2.delete_tags(Resources=[instance_id], Tags=[{"Key": "Team"}])
seen["tag_deleted"] = guest_get("/latest/meta-data/tags/instance/Team", t)[0]

associations = ec2.describe_iam_instance_profile_associations(
    Filters=[{"Name": "instance-id", "Values": [instance_id]}]
)["IamInstanceProfileAssociations"]
seen["association_state"] = associations[0]["State"]
replaced = ec2.replace_iam_instance_profile_association(
    AssociationId=associations[0]["AssociationId"], IamInstanceProfile={"Name": "reporting"}
)["IamInstanceProfileAssociation"]
seen["role_after_replace"] = guest_get("/latest/meta-data/iam/security-credentials/", t)
credentials = guest_get("/latest/meta-data/iam/security-credentials/reporting", t)
seen["credentials_code"] = json.loads(credentials[1])["Code"]
seen["stale_association"] = error_code(
    ec2.disassociate_iam_instance_profile, AssociationId=associations[0]["AssociationId"]
)
ec2.disassociate_iam_instance_profile(AssociationId=replaced["AssociationId"])
seen["role_after_disassociate"] = guest_get("/latest/meta-data/iam/security-credentials/", t)[0]
associated = ec2.associate_iam_instance_profile(
    InstanceId=instance_id, IamInstanceProfile={"Arn": "arn:aws:iam::123456789012:instance-profile/web"}
)["IamInstanceProfileAssociation"]
seen["associated_arn"] = associated["IamInstanceProfile"]["Arn"]
seen["role_after_associate"] = guest_get("/latest/meta-data/iam/security-credentials/", t)
seen["second_association"] = error_code(
    ec2.associate_iam_instance_profile, InstanceId=instance_id, IamInstanceProfile={"Name": "other"}
)

seen["defaults_before"] = ec2.get_instance_metadata_defaults()["AccountLevel"]
ec2.modify_instance_metadata_defaults(HttpTokens="required", HttpTokensEnforced="enabled")
seen["defaults_after"] = ec2.get_instance_metadata_defaults()["AccountLevel"]
seen["optional_while_enforced"] = error_code(
    ec2.modify_instance_metadata_options, InstanceId=instance_id, HttpTokens="optional"
)
seen["v1_while_enforced"] = guest_get("/latest/meta-data/instance-id")[0]

print(json.dumps(seen))
