"""Drives an imds fleet (`imds serve --fleet`) with boto3's unmodified ec2 client.

  boto3_fleet.py CONTROL_URL GUEST_URL SUBNET_ID

Launches three instances into SUBNET_ID (whose addresses this host can send from, such as a
127.16.0.0/16 loopback subnet), finds them by tag, changes one's metadata options, stops and
starts another, terminates the third, and describes the fleet after. Each guest request is sent
from the instance's own address, as that instance. Prints one JSON object of what boto3 and the
guest API answered at each step, for the Rust test to check.
"""

import http.client
import json
import sys
import time
import urllib.parse

import boto3
from botocore.exceptions import ClientError

control, guest, subnet = sys.argv[1], sys.argv[2], sys.argv[3]
guest_url = urllib.parse.urlsplit(guest)
ec2 = boto3.client(
    "ec2",
    endpoint_url=control,
    region_name="us-east-1",
    aws_access_key_id="AKIAIMDSBOTO3FLEET01",
    aws_secret_access_key="boto3-fleet-test-secret",
)
seen = {}
USER_DATA = "#!/bin/sh\necho launched by boto3\n"
NAME = "boto3-web"


def guest_request(source, method, path, headers=None):
    """Status and body of one guest request sent from the address `source`."""
    connection = http.client.HTTPConnection(
        guest_url.hostname, guest_url.port, timeout=5, source_address=(source, 0)
    )
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return [response.status, response.read().decode()]
    finally:
        connection.close()


def guest_v1(source, path):
    return guest_request(source, "GET", path)


def guest_v2(source, path):
    """An IMDSv2 GET from `source`: its token PUT's status when refused, else the GET's answer."""
    status, token = guest_request(
        source, "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    )
    if status != 200:
        return [status, token]
    return guest_request(source, "GET", path, {"X-aws-ec2-metadata-token": token})


def error_code(call, **kwargs):
    try:
        call(**kwargs)
    except ClientError as error:
        return error.response["Error"]["Code"]
    return None


def described(**kwargs):
    """Every instance DescribeInstances answers with `kwargs`, by id."""
    answer = ec2.describe_instances(**kwargs)
    return {
        i["InstanceId"]: i for r in answer["Reservations"] for i in r["Instances"]
    }


def states(changes):
    return {
        c["InstanceId"]: [c["PreviousState"]["Name"], c["CurrentState"]["Name"]] for c in changes
    }


launched = ec2.run_instances(
    ImageId="ami-0abcdef1234567890",
    InstanceType="t3.micro",
    MinCount=3,
    MaxCount=3,
    SubnetId=subnet,
    TagSpecifications=[
        {
            "ResourceType": "instance",
            "Tags": [{"Key": "Name", "Value": NAME}, {"Key": "Team", "Value": "blue"}],
        }
    ],
    MetadataOptions={
        "HttpTokens": "required",
        "HttpPutResponseHopLimit": 2,
        "InstanceMetadataTags": "enabled",
    },
    UserData=USER_DATA,
)["Instances"]
ids = [i["InstanceId"] for i in launched]
ips = [i["PrivateIpAddress"] for i in launched]
seen["ids"] = ids
seen["ips"] = ips
seen["launched"] = [
    {
        "state": i["State"]["Name"],
        "type": i["InstanceType"],
        "subnet": i["SubnetId"],
        "options": i["MetadataOptions"],
        "tags": {t["Key"]: t["Value"] for t in i.get("Tags", [])},
    }
    for i in launched
]

# Pending settles into running within half a second.
time.sleep(0.6)
found = described(Filters=[{"Name": "tag:Name", "Values": [NAME]}])
seen["found_by_name"] = {id: i["State"]["Name"] for id, i in found.items()}
seen["found_running_by_name"] = sorted(
    described(
        Filters=[
            {"Name": "tag:Name", "Values": [NAME]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )
)
seen["guests"] = [
    {
        "instance_id": guest_v2(ip, "/latest/meta-data/instance-id"),
        "local_ipv4": guest_v2(ip, "/latest/meta-data/local-ipv4"),
        "name_tag": guest_v2(ip, "/latest/meta-data/tags/instance/Name"),
        "user_data": guest_v2(ip, "/latest/user-data"),
        "v1": guest_v1(ip, "/latest/meta-data/instance-id")[0],
    }
    for ip in ips
]

# IMDSv1 back on for the first instance only.
modified = ec2.modify_instance_metadata_options(InstanceId=ids[0], HttpTokens="optional")
seen["modify_answer"] = modified["InstanceMetadataOptions"]
seen["v1_after_modify"] = [guest_v1(ip, "/latest/meta-data/instance-id") for ip in ips]
seen["tokens_after_modify"] = {
    id: i["MetadataOptions"]["HttpTokens"] for id, i in described(InstanceIds=ids).items()
}

# The second instance stops, answers no guest, and starts again.
seen["stop"] = states(ec2.stop_instances(InstanceIds=[ids[1]])["StoppingInstances"])
seen["guest_while_stopping"] = guest_v1(ips[1], "/latest/meta-data/instance-id")[0]
time.sleep(0.6)
seen["state_stopped"] = described(InstanceIds=[ids[1]])[ids[1]]["State"]["Name"]
seen["start"] = states(ec2.start_instances(InstanceIds=[ids[1]])["StartingInstances"])
time.sleep(0.6)
seen["guest_after_start"] = guest_v2(ips[1], "/latest/meta-data/instance-id")

# The third is terminated: no guest, no start, listed as terminated.
seen["terminate"] = states(ec2.terminate_instances(InstanceIds=[ids[2]])["TerminatingInstances"])
seen["guest_after_terminate"] = guest_v1(ips[2], "/latest/meta-data/instance-id")[0]
time.sleep(0.6)
seen["start_terminated"] = error_code(ec2.start_instances, InstanceIds=[ids[2]])
after = described()
seen["after"] = {
    id: {
        "state": i["State"]["Name"],
        "http_tokens": i["MetadataOptions"]["HttpTokens"],
        "private_ip": i["PrivateIpAddress"],
    }
    for id, i in after.items()
}
seen["after_running_by_name"] = sorted(
    described(
        Filters=[
            {"Name": "tag:Name", "Values": [NAME]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )
)

print(json.dumps(seen))
