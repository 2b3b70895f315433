"""DescribeInstances by id in batches, against moto's server on 127.0.0.1."""

from __future__ import annotations

import pytest

from spotwatch.ec2_lookup import FILTER_CHUNK, chunks, describe_instances


def test_chunks_are_consecutive_and_bounded() -> None:
    assert [list(c) for c in chunks("abcde", 2)] == [["a", "b"], ["c", "d"], ["e"]]
    assert list(chunks([], 2)) == []


@pytest.mark.slow
def test_many_ids_take_one_call_per_chunk_and_unknown_ids_are_absent(
    aws_env: dict[str, str],
) -> None:
    import boto3

    ec2 = boto3.client("ec2")
    reservation = ec2.run_instances(ImageId="ami-12c6146b", MinCount=2, MaxCount=2)
    known = [i["InstanceId"] for i in reservation["Instances"]]
    unknown = [f"i-{n:017x}" for n in range(2 * FILTER_CHUNK + 1)]  # never made: absent
    found, calls = describe_instances(ec2, [*unknown, *known])
    assert calls == 3  # 2 * 100 + 3 ids
    assert sorted(found) == sorted(known)
    for instance_id in known:
        assert found[instance_id]["State"]["Name"] in ("pending", "running")
        assert found[instance_id]["InstanceId"] == instance_id
