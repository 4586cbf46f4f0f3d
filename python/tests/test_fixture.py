"""The `imds` fixture and marker, as a test suite uses them."""

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import botocore.session
import pytest
from botocore.utils import IMDSRegionProvider

import pytest_imds


@pytest.fixture(autouse=True)
def no_shared_aws_files(monkeypatch, tmp_path):
    """No ~/.aws/credentials or ~/.aws/config of the machine running the tests takes part."""
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


def get(url, token=None):
    """Status and body of a GET, with a session token when given."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("X-aws-ec2-metadata-token", token)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def token(imds):
    request = urllib.request.Request(
        imds.url + "/latest/api/token",
        method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode()


@pytest.mark.imds(role="ci-runner")
def test_botocore_gets_credentials_and_region_from_the_fixture(imds, monkeypatch):
    assert os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"] == imds.url
    session = botocore.session.Session()
    credentials = session.get_credentials()
    assert credentials is not None and credentials.method == "iam-role"
    assert credentials.get_frozen_credentials().access_key.startswith("ASIA")
    assert IMDSRegionProvider(session).provide() == "us-east-1"
    assert get(imds.url + "/latest/meta-data/iam/security-credentials/") == (200, "ci-runner")


def test_the_fixture_clears_the_variables_that_bypass_imds_and_restores_them(pytester):
    pytester.makepyfile(
        """
        import os

        def test_inner(imds):
            assert os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"] == imds.url
            assert "AWS_EC2_METADATA_DISABLED" not in os.environ
            assert "AWS_EC2_METADATA_V1_DISABLED" not in os.environ
            assert "AWS_ACCESS_KEY_ID" not in os.environ

        def test_after():
            assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
            assert os.environ["AWS_EC2_METADATA_V1_DISABLED"] == "true"
            assert os.environ["AWS_ACCESS_KEY_ID"] == "AKIAOUTERTEST0000001"
            assert "AWS_EC2_METADATA_SERVICE_ENDPOINT" not in os.environ
        """
    )
    for name, value in {
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_EC2_METADATA_V1_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": "AKIAOUTERTEST0000001",
    }.items():
        pytester._monkeypatch.setenv(name, value)
    pytester._monkeypatch.delenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", raising=False)
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


@pytest.mark.imds(http_tokens="required")
def test_required_tokens_make_an_imdsv1_request_fail_with_401(imds):
    assert get(imds.url + "/latest/meta-data/instance-id")[0] == 401
    assert get(imds.url + "/latest/meta-data/instance-id", token(imds)) == (200, imds.instance_id)


def test_set_options_requires_tokens_on_the_running_server(imds):
    assert get(imds.url + "/latest/meta-data/instance-id")[0] == 200
    imds.set_options(http_tokens="required")
    assert get(imds.url + "/latest/meta-data/instance-id")[0] == 401


def test_a_refused_control_action_raises_with_its_ec2_error_code(imds):
    with pytest.raises(pytest_imds.ControlError) as refused:
        imds.set_options(hop_limit=65)
    assert refused.value.code == "InvalidParameterValue"
    assert "ModifyInstanceMetadataOptions" in str(refused.value)


def test_a_spot_notice_appears_after_spot_interrupt_in_zero_seconds(imds):
    path = imds.url + "/latest/meta-data/spot/instance-action"
    assert get(path)[0] == 404
    imds.spot_interrupt(action="stop", in_seconds=0)
    status, body = get(path)
    assert status == 200
    assert json.loads(body)["action"] == "stop"
    assert get(imds.url + "/latest/meta-data/events/recommendations/rebalance")[0] == 200


def test_a_spot_notice_more_than_13_minutes_ahead_is_refused(imds):
    with pytest.raises(ValueError, match="in_seconds=781"):
        imds.spot_interrupt(in_seconds=781)


@pytest.mark.imds(role="ci-runner")
def test_a_fault_on_the_role_path_makes_botocore_retry_and_succeed(imds, monkeypatch):
    monkeypatch.setenv("AWS_METADATA_SERVICE_NUM_ATTEMPTS", "2")
    imds.add_fault(path="/latest/meta-data/iam/*", status=503, count=1)
    credentials = botocore.session.Session().get_credentials()
    assert credentials is not None and credentials.method == "iam-role"
    [fault] = imds.faults()
    assert fault["fired"] == "1"  # the first attempt got the 503, the retry the role


def test_cleared_faults_no_longer_fire(imds):
    imds.add_fault(path="/latest/meta-data/instance-id", status=500)
    assert get(imds.url + "/latest/meta-data/instance-id")[0] == 500
    imds.clear_faults()
    assert get(imds.url + "/latest/meta-data/instance-id")[0] == 200


def test_requests_show_an_imdsv1_request(imds):
    assert get(imds.url + "/latest/meta-data/ami-id")[0] == 200
    [line] = imds.requests(wait_for=1)
    assert line["method"] == "GET"
    assert line["path"] == "/latest/meta-data/ami-id"
    assert line["version"] == "v1"
    assert line["pid"] == os.getpid()


@pytest.mark.imds(
    user_data="#!/bin/sh\necho hi\n",
    tags={"Name": "web-1", "Team": "payments"},
    instance_metadata_tags="enabled",
)
def test_the_marker_sets_user_data_and_tags_and_tag_adds_more(imds):
    assert get(imds.url + "/latest/user-data") == (200, "#!/bin/sh\necho hi\n")
    assert get(imds.url + "/latest/meta-data/tags/instance/Team") == (200, "payments")
    imds.tag(Stage="canary")
    assert get(imds.url + "/latest/meta-data/tags/instance/Stage") == (200, "canary")


def test_ec2_is_a_boto3_client_on_the_control_api(imds):
    pytest.importorskip("boto3")
    reservations = imds.ec2().describe_instances()["Reservations"]
    assert reservations[0]["Instances"][0]["InstanceId"] == imds.instance_id


@pytest.mark.imds(fleet=True)
def test_run_instance_adds_an_instance_to_the_fleet(imds):
    made = imds.run_instance(tags={"Name": "worker"})
    assert made.instance_id.startswith("i-") and made.instance_id == imds.instance_id
    other = imds.run_instance()
    assert other.instance_id != made.instance_id
    ids = [
        instance["InstanceId"]
        for reservation in imds.ec2().describe_instances()["Reservations"]
        for instance in reservation["Instances"]
    ]
    assert made.instance_id in ids and other.instance_id in ids


def children_named_imds():
    """Processes whose parent is this one and whose executable is imds, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == os.getpid() and name == "imds":
            found.append(int(entry.name))
    return found


def test_no_process_is_left_behind_after_a_failing_test(pytester, tmp_path):
    pid_file = tmp_path / "pid"
    pytester.makepyfile(
        f"""
        def test_fails(imds):
            open({str(pid_file)!r}, "w").write(str(imds.pid))
            assert False, "this test fails on purpose"
        """
    )
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(failed=1)
    pid = int(pid_file.read_text())
    assert not Path(f"/proc/{pid}").exists()
    assert children_named_imds() == []


def test_the_context_manager_works_outside_pytest_and_restores_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest_imds.Imds(http_tokens="required") as imds:
        assert os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"] == imds.url
        assert "AWS_EC2_METADATA_DISABLED" not in os.environ
        assert get(imds.url + "/latest/meta-data/instance-id")[0] == 401
        pid = imds.pid
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
    assert not Path(f"/proc/{pid}").exists()


def test_a_missing_binary_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("IMDS_BINARY", str(tmp_path / "no-such-imds"))
    with pytest.raises(pytest_imds.ImdsStartError, match="IMDS_BINARY=.*not an executable"):
        pytest_imds.Imds().start()


def test_a_bad_config_is_a_clear_error_with_the_server_output():
    with pytest.raises(pytest_imds.ImdsStartError, match="exited with status") as failed:
        pytest_imds.Imds(http_tokens="sometimes").start()
    assert "http_tokens" in str(failed.value)
