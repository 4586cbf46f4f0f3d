"""Reads imds' MetadataNoToken history with boto3's unmodified cloudwatch client.

  boto3_cloudwatch.py CONTROL_URL START END METRIC INSTANCE_ID...

For each instance, asks GetMetricData for METRIC's one-minute sums between START and END
(epoch seconds), once in CloudWatch's default order and once ascending. Prints one JSON object:
{"default": {id: [[timestamp, value], ...]}, "ascending": {...}, "status": {id: StatusCode}}.
"""

import json
import sys

import boto3

control, start, end, metric = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
instances = sys.argv[5:]
cloudwatch = boto3.client(
    "cloudwatch",
    endpoint_url=control,
    region_name="us-east-1",
    aws_access_key_id="AKIAIMDSCONTROLTEST1",
    aws_secret_access_key="imds-control-test-secret-key-0123456789ab",
)
queries = [
    {
        "Id": f"q{n}",
        "Label": instance,
        "MetricStat": {
            "Metric": {
                "Namespace": "AWS/EC2",
                "MetricName": metric,
                "Dimensions": [{"Name": "InstanceId", "Value": instance}],
            },
            "Period": 60,
            "Stat": "Sum",
        },
    }
    for n, instance in enumerate(instances)
]
seen = {"status": {}}
for order, extra in [("default", {}), ("ascending", {"ScanBy": "TimestampAscending"})]:
    answer = cloudwatch.get_metric_data(
        MetricDataQueries=queries, StartTime=start, EndTime=end, **extra
    )
    seen[order] = {}
    for result in answer["MetricDataResults"]:
        seen[order][result["Label"]] = [
            [int(t.timestamp()), v] for t, v in zip(result["Timestamps"], result["Values"])
        ]
        seen["status"][result["Label"]] = result["StatusCode"]
print(json.dumps(seen))
