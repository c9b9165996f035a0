"""module_utils/draining.py: a host's draining mark, as walm_vm_info reports it."""

from ansible_collections.walm.qemu.plugins.module_utils.draining import mark_path, read_mark


def test_no_mark_is_in_service(tmp_path):
    assert read_mark(str(tmp_path)) is None
    assert read_mark(str(tmp_path / "missing")) is None


def test_the_mark_as_written(tmp_path):
    with open(mark_path(str(tmp_path)), "w") as f:
        f.write('{"since": 12.5, "reason": "maintenance run of group g"}\n')
    assert read_mark(str(tmp_path)) == {"since": 12.5, "reason": "maintenance run of group g"}


def test_an_unreadable_mark_still_drains(tmp_path):
    with open(mark_path(str(tmp_path)), "w") as f:
        f.write("not json")
    mark = read_mark(str(tmp_path))
    assert mark["since"] is None and "unreadable mark" in mark["reason"]
