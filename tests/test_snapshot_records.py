"""Snapshots that carry their VM: vm create saves a manifest, the VM's config in it, beside the
clones; vm list shows the consistency, vm delete and -keep remove it with the set."""

import json
import re

import pytest
from world import ORIGINAL_STAMP, write_disk

import pve_ontap_snapshot as tool


def records(world, vmid, vol=None):
    """{'conf': bytes, 'manifest': dict, 'manifest_name': name} of the one set the VM has a record of."""
    (manifest,) = world.records(vol or world.vol1, vmid)
    record = json.loads(((vol or world.vol1).path / 'images' / str(vmid) / manifest).read_text())
    return {'conf': record.pop('config').encode('utf-8', 'surrogateescape'), 'manifest': record,
            'manifest_name': manifest}


def stamp_of(world, vmid):
    result = world.run('-output', 'json', 'vm', 'list', '-vm', vmid)
    assert result.code == 0, result.err
    return [s['stamp'] for s in json.loads(result.out)]


def test_a_snapshot_carries_the_vms_config_and_a_manifest_of_its_disks(world):
    vm = world.pve.vm(101)
    vm.config['description'] = 'db: primary\nsecond line'

    result = world.run('vm', 'create', '-vm', 101, '-no-register')

    assert result.code == 0, result.err
    (stamp,) = stamp_of(world, 101)
    saved = records(world, 101)
    assert saved['manifest_name'] == f'vm-101-snapshot-{stamp}.shutdown.manifest.json'
    # PVE's .conf syntax: the description as encoded comments first, then every key sorted, no digest
    lines = saved['conf'].decode().splitlines()
    assert lines[:2] == ['#db%3A primary', '#second line']
    assert 'memory: 1024' in lines and 'scsi0: ONTAP01:101/vm-101-disk-0.raw,size=1G' in lines
    assert lines[2:] == sorted(lines[2:]) and not [line for line in lines if line.startswith('digest')]
    assert saved['manifest'].pop('signature').startswith('hmac-sha256:')
    assert saved['manifest'] == {
        'tool': 'pve-ontap-snapshot', 'version': tool.tool_version(), 'vmid': 101, 'type': 'qemu', 'name': 'db',
        'node': 'pve2',
        'stamp': stamp, 'consistency': 'shutdown', 'config_from': 'api',
        'identity': {'ctime': None, 'smbios_uuid': None},
        'disks': [{'key': 'scsi0', 'volid': 'ONTAP01:101/vm-101-disk-0.raw',
                   'clone': f'images/101/vm-101-disk-0-snapshot-{stamp}.raw', 'size': 2**30, 'storage': 'ONTAP01',
                   'cluster': world.a.host, 'svm': 'svm1', 'volume': 'proxmox_storage01', 'format': 'raw'}]}
    # no image PVE would take for a disk
    assert not tool.Guest.IMAGE_VOLNAME.match(f'101/{saved["manifest_name"]}')


@pytest.mark.parametrize('flags, consistency', [((), 'running'), (('-pause',), 'paused'),
                                                (('-suspend',), 'suspended'), (('-shutdown',), 'shutdown')])
def test_the_manifest_says_how_consistent_the_snapshot_is(world, flags, consistency):
    result = world.run('vm', 'create', '-vm', 100, *flags, '-no-register')

    assert result.code == 0, result.err
    # beside the first ONTAP disk (efidisk0, on ONTAP01) only
    saved = records(world, 100)
    assert saved['manifest']['consistency'] == consistency
    assert [d['key'] for d in saved['manifest']['disks']] == ['efidisk0', 'ide0', 'sata0', 'scsi0', 'tpmstate0',
                                                              'virtio0']
    assert {d['cluster'] for d in saved['manifest']['disks']} == {world.a.host, world.b.host}
    assert world.records(world.vol2, 100) == []


def test_a_running_vm_on_one_volume_is_taken_at_one_instant(world):
    write_disk(world.vol1, 103, 'vm-103-disk-0.raw')
    write_disk(world.vol1, 103, 'vm-103-disk-1.raw')
    world.pve.add_vm(103, 'one', node='pve1', status='running',
                     config={'scsi0': 'ONTAP01:103/vm-103-disk-0.raw', 'scsi1': 'ONTAP01:103/vm-103-disk-1.raw'})

    assert world.run('vm', 'create', '-vm', 103, '-no-register').code == 0

    manifest = records(world, 103)['manifest']
    assert manifest['consistency'] == 'atomic'
    assert [d['size'] for d in manifest['disks']] == [None, None]     # no size= in the config


def test_on_a_node_the_config_file_is_saved_as_pve_holds_it(world, monkeypatch, tmp_path):
    raw = b'#web server\nmemory: 1024\nscsi0: ONTAP01:101/vm-101-disk-0.raw,size=1G\n\n[before-update]\nmemory: 512\n'
    (tmp_path / 'nodes' / 'pve2' / 'qemu-server').mkdir(parents=True)
    (tmp_path / 'nodes' / 'pve2' / 'qemu-server' / '101.conf').write_bytes(raw)
    monkeypatch.setattr(tool.Node, 'name', lambda: 'pve1')
    monkeypatch.setattr(tool.Node, 'CONFIGS_DIR', str(tmp_path / 'nodes'))

    assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0

    saved = records(world, 101)
    assert saved['conf'] == raw
    assert saved['manifest']['config_from'] == str(tmp_path / 'nodes' / 'pve2' / 'qemu-server' / '101.conf')


def test_vm_list_shows_the_consistency_of_new_snapshots_and_unknown_for_old_ones(world):
    data = world.disk(world.vol1, 101, 'vm-101-disk-0.raw').read_bytes()
    world.disk(world.vol1, 101, f'vm-101-disk-0-snapshot-{ORIGINAL_STAMP}.raw').write_bytes(data)
    assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0
    world.a.requests.clear()

    result = world.run('vm', 'list', '-vm', 101)

    assert result.code == 0, result.err
    rows = [re.split(r' {2,}', line) for line in result.out.splitlines()]
    assert rows[0][-3:] == ['CONSISTENCY', 'OF', 'HELD']
    assert [(row[0] == ORIGINAL_STAMP, row[3], row[-3]) for row in rows[1:]] == [(True, 'scsi0', 'unknown'),
                                                                                   (False, 'scsi0', 'shutdown')]
    # the consistency from the directory listing; the one manifest read, to check it
    assert [r['method'] for r in world.a.requests if '/files' in r['path']] == ['GET', 'GET']
    data = json.loads(world.run('-output', 'json', 'vm', 'list', '-vm', 101).out)
    assert [(s['consistency'], len(s['files'])) for s in data] == [('unknown', 1), ('shutdown', 1)]


def test_vm_delete_removes_the_manifest_with_the_clones(world):
    assert world.run('vm', 'create', '-vm', 101).code == 0
    (stamp,) = stamp_of(world, 101)

    result = world.run('vm', 'delete', '-vm', 101, '-snapshot', stamp)

    assert result.code == 0, result.err
    assert world.files(world.vol1, 101) == ['vm-101-disk-0.raw']


def test_keep_removes_the_manifests_and_older_config_files_of_the_sets_it_deletes(world):
    for _ in range(2):
        assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0
    (older, _) = stamp_of(world, 101)
    world.disk(world.vol1, 101, f'vm-101-snapshot-{older}.conf').write_bytes(b'memory: 1024\n')    # as earlier builds wrote it
    assert len(world.records(world.vol1, 101)) == 3

    result = world.run('vm', 'create', '-vm', 101, '-keep', 1, '-no-register')

    assert result.code == 0, result.err
    (stamp,) = stamp_of(world, 101)
    assert world.records(world.vol1, 101) == [f'vm-101-snapshot-{stamp}.shutdown.manifest.json']


def test_a_manifest_that_cannot_be_written_leaves_the_snapshot_and_says_so(world):
    world.a.fail('POST', r'snapshot-.*manifest', status=500, code='917927', message='Disk quota exceeded.')

    result = world.run('vm', 'create', '-vm', 101, '-no-register')

    assert result.code == 1
    (line,) = [line for line in result.err.splitlines() if line.startswith('ERROR')]
    assert re.fullmatch(r'ERROR: VM 101: snapshot \S+ of 1 disk\(s\) was made, but its manifest and config were not '
                        r'saved on ONTAP01: ONTAP \S+: write images/101/vm-101-snapshot-\S+\.shutdown\.manifest\.json '
                        r'in volume proxmox_storage01: Disk quota exceeded\.', line), line
    assert len(world.clones(world.vol1, 101)) == 1
    (listed,) = json.loads(world.run('-output', 'json', 'vm', 'list', '-vm', 101).out)
    assert listed['complete'] and listed['consistency'] == 'unknown'


def test_a_manifest_write_whose_answer_is_lost_is_read_back(world):
    world.a.lose_answer('POST', r'snapshot-.*manifest')

    result = world.run('vm', 'create', '-vm', 101, '-no-register')

    assert result.code == 0, result.err
    assert len(world.records(world.vol1, 101)) == 1
    lookups = [r for r in world.a.requests if r['method'] == 'GET' and r['path'].endswith('manifest.json')]
    assert lookups and lookups[-1]['status'] == 200


def test_a_pre_restore_snapshots_manifest_names_only_the_copies_it_holds(world):
    """A restore copies only the disks it overwrites: from a storage snapshot of ONTAP01, not
    VM 100's disks on ONTAP02, which its pre-restore snapshot then holds no copy of."""
    world.pve.vm(100).status = 'stopped'
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (snapshot,) = world.vol1.snapshots

    result = world.run('vm', 'restore', '-vm', 100, '-storage-snapshot', snapshot, '-yes')

    assert result.code == 0, result.err
    (name,) = [name for name in world.records(world.vol1, 100) if '-prerestore-' in name]
    manifest = json.loads((world.vol1.path / 'images/100' / name).read_text())
    clones = {disk['key']: disk['clone'] for disk in manifest['disks']}
    assert {key for key, clone in clones.items() if clone is None} == {'sata0', 'virtio0'}
    copies = {f'images/100/{name}' for name in world.clones(world.vol1, 100) + world.clones(world.vol2, 100)}
    assert {clone for clone in clones.values() if clone} == copies and len(copies) == 4
