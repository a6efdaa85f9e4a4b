"""A storage snapshot says what it holds: storage create writes a manifest (the config in it) of
every guest with a disk on the storage into pve-ontap-snapshot/ of the volume just before the
snapshot, and storage list shows how many guests each snapshot holds and how consistent."""

import json
import re

import pytest
from world import OLD_SNAPSHOT, add_container, config_in

import pve_ontap_snapshot as tool


def test_storage_list_shows_how_many_guests_each_snapshot_holds_and_how_consistent(world):
    world.a.add_snapshot('proxmox_storage01', OLD_SNAPSHOT, create_time='2024-03-13T14:42:47+00:00')
    add_container(world)
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    (_, name) = world.storage_snapshots()

    text = world.run('-loglevel', 'warn', 'storage', 'list', '-storage', 'ONTAP01')
    data = world.json('storage', 'list', '-storage', 'ONTAP01')

    assert text.code == 0 and text.err == ''
    header, old, new = text.out.splitlines()
    assert header.split()[4:6] == ['GUESTS', 'CONSISTENCY']
    # NAME CREATED SIZE (a number and its unit) LABEL GUESTS CONSISTENCY COMMENT
    assert old.split()[5:7] == ['-', 'unknown']
    assert re.match(r'3 +1 running, 1 atomic, 1 shutdown +Snapshot of', new.split(maxsplit=5)[5])
    assert [s['name'] for s in data] == [OLD_SNAPSHOT, name]
    assert data[0]['guests'] is None
    assert data[1]['guests'] == [{'vmid': 100, 'type': 'qemu', 'consistency': 'running'},
                                 {'vmid': 101, 'type': 'qemu', 'consistency': 'shutdown'},
                                 {'vmid': 200, 'type': 'lxc', 'consistency': 'atomic'}]


def test_a_snapshot_whose_records_cannot_be_read_lists_as_unknown_with_a_warning(world):
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    world.a.fail('GET', r'snapshot.*pve-ontap-snapshot', status=403, code='6', message='not permitted')

    result = world.run('-output', 'json', 'storage', 'list', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    assert json.loads(result.out)[0]['guests'] is None
    assert 'WARNING: storage ONTAP01: what 1 snapshot(s) hold could not be read, shown as unknown' in result.err


def test_a_record_whose_answer_was_lost_is_read_back(world):
    world.a.lose_answer('POST', r'vm-101.*manifest')

    result = world.run('storage', 'create', '-storage', 'ONTAP01')

    assert result.code == 0, result.err
    (name,) = world.storage_snapshots()
    assert config_in(world.storage_records(name)['vm-101.shutdown.manifest.json']).startswith(b'memory: 1024\n')


@pytest.mark.parametrize('names, expected', [
    ([], []),
    (['vm-100.conf'], []),
    (['ct-7.conf', 'ct-7.paused.manifest.json', 'vm-10.frozen.manifest.json', 'notes.txt', 'vm-9.bogus.manifest.json'],
     [{'vmid': 7, 'type': 'lxc', 'consistency': 'paused'}, {'vmid': 10, 'type': 'qemu', 'consistency': 'frozen'}])])
def test_recorded_guests_come_from_manifest_names(names, expected):
    assert tool.Names.recorded_guests(names) == expected


@pytest.mark.parametrize('words, expected', [
    ([], '-'), (['running'], '1 running'),
    (['running', 'frozen', 'frozen', 'frozen'], '3 frozen, 1 running'),
    (['shutdown', 'atomic'], '1 atomic, 1 shutdown')])
def test_consistency_summary_counts_most_first(words, expected):
    assert tool.Consistency.summary([{'consistency': word} for word in words]) == expected
