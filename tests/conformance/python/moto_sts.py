"""Drives a moto server that stands in for IAM and STS in imds' STS tests.

  moto_sts.py setup ENDPOINT
      Creates an IAM user with an access key, a role it may assume and the policy allowing it,
      and prints {"access_key_id", "secret_access_key", "role_arn"}. moto must run with
      INITIAL_NO_AUTH_ACTION_COUNT=4, so these four calls are the only unauthenticated ones and
      every later request must be signed with known keys.
  moto_sts.py whoami ENDPOINT ACCESS_KEY_ID SECRET_ACCESS_KEY SESSION_TOKEN
      Prints {"arn"} from sts:GetCallerIdentity made with those credentials: proof that moto
      issued them (unknown keys are refused with InvalidClientTokenId).
Exits 1 with a one-line error on stderr on failure.
"""

import json
import sys

import boto3

REGION = "us-east-1"


def client(service, endpoint, key="AKIAIOSFODNN7EXAMPLE", secret="not-checked-during-setup", token=None):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aws_session_token=token,
    )


def setup(endpoint):
    iam = client("iam", endpoint)
    user = iam.create_user(UserName="imds-host")["User"]
    key = iam.create_access_key(UserName="imds-host")["AccessKey"]
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": user["Arn"]}, "Action": "sts:AssumeRole"}],
    }
    role = iam.create_role(RoleName="imds-sts-role", AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    allow = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role["Arn"]}],
    }
    iam.put_user_policy(UserName="imds-host", PolicyName="assume", PolicyDocument=json.dumps(allow))
    return {
        "access_key_id": key["AccessKeyId"],
        "secret_access_key": key["SecretAccessKey"],
        "role_arn": role["Arn"],
    }


def whoami(endpoint, key, secret, token):
    return {"arn": client("sts", endpoint, key, secret, token).get_caller_identity()["Arn"]}


def main(argv):
    try:
        if argv[1] == "setup":
            result = setup(argv[2])
        elif argv[1] == "whoami":
            result = whoami(*argv[2:6])
        else:
            raise ValueError(f"unknown command {argv[1]}")
    except Exception as error:  # one line for the caller, whatever boto3 raised
        print(f"moto_sts failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
