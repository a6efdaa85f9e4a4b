"""vm verify and storage verify prove a snapshot restorable without restoring it: from metadata and
qcow2 headers alone, read-only, in a bounded number of requests."""

import pytest
from world import write_qcow2

import pve_ontap_snapshot as tool


@pytest.mark.parametrize('backing', [None, 'snap-before-vm-100-disk-2.qcow2'])
def test_a_qcow2_headers_virtual_size_is_read_beside_its_backing_file(tmp_path, backing):
    head = write_qcow2(tmp_path / 'disk.qcow2', backing=backing, size=3 * 2**30).read_bytes()[:tool.Qcow2.HEADER_READ]

    assert tool.Qcow2.virtual_size(head) == 3 * 2**30
    assert tool.Qcow2.backing(head) == backing


@pytest.mark.parametrize('head', [b'', b'QFI\xfb' + bytes(20), b'\x00' * 4096, b'not a qcow2 file at all' * 10])
def test_a_file_that_is_no_qcow2_has_no_virtual_size(head):
    assert tool.Qcow2.virtual_size(head) is None
