"""The pure functions the commands share: disk lines, names and stamps, snapshot sets and their
manifests, consistency, task states, sizes. Those of one command are in its file (what a restored
config may set in test_vm_restore.py, how storage create holds a guest and which snapshots -keep
deletes in test_storage_create.py, ...), config.ini's in test_config.py."""

import datetime
import re

import pytest

import pve_ontap_snapshot as tool


@pytest.mark.parametrize('key, value, storage, path', [
    ('scsi0', 'ONTAP01:100/vm-100-disk-0.raw,size=32G,discard=on', 'ONTAP01', 'images/100/vm-100-disk-0.raw'),
    ('virtio15', 'ONTAP01:100/vm-100-disk-1.qcow2', 'ONTAP01', 'images/100/vm-100-disk-1.qcow2'),
    ('sata5', 'S2:100/vm-100-disk-2.vmdk,cache=none', 'S2', 'images/100/vm-100-disk-2.vmdk'),
    ('ide1', 'ONTAP01:100/vm-100-disk-3.raw', 'ONTAP01', 'images/100/vm-100-disk-3.raw'),
    ('efidisk0', 'ONTAP01:100/vm-100-disk-4.raw,efitype=4m', 'ONTAP01', 'images/100/vm-100-disk-4.raw'),
    ('tpmstate0', 'ONTAP01:100/vm-100-disk-5.raw,version=v2.0', 'ONTAP01', 'images/100/vm-100-disk-5.raw'),
    # a linked clone: the base image belongs to VM 900, the disk itself to 101
    ('scsi1', 'ONTAP01:900/base-900-disk-0.raw/101/vm-101-disk-0.qcow2', 'ONTAP01',
     'images/101/vm-101-disk-0.qcow2'),
    ('scsi2', 'file=ONTAP01:100/vm-100-disk-6.raw,size=1G', 'ONTAP01', 'images/100/vm-100-disk-6.raw'),
    # a block storage volume: a disk, but no image file
    ('scsi3', 'local-lvm:vm-100-disk-0,size=4G', 'local-lvm', None),
])
def test_disk_lines_that_are_disks(key, value, storage, path):
    disk = tool.Guest.parse_disk(key, value)
    assert (disk.key, disk.storage, disk.path) == (key, storage, path)


@pytest.mark.parametrize('key, value', [
    ('ide2', 'local:iso/debian.iso,media=cdrom'),
    ('ide2', 'none,media=cdrom'),
    ('ide3', 'cdrom,media=cdrom'),
    ('ide0', 'ONTAP01:vm-100-cloudinit.qcow2,media=cdrom'),
    ('scsi0', '/dev/disk/by-id/ata-SAMSUNG_123'),
    ('unused0', 'ONTAP01:100/vm-100-disk-7.raw'),
    ('vmstate', 'ONTAP01:100/vm-100-state-suspend-2024-03-13.raw'),
    ('scsihw', 'virtio-scsi-single'),
    ('net0', 'virtio=BC:24:11:00:00:01,bridge=vmbr0'),
    ('bootdisk', 'scsi0'),
    ('efidisk1', 'ONTAP01:100/vm-100-disk-4.raw'),
])
def test_disk_lines_that_are_not(key, value):
    assert tool.Guest.parse_disk(key, value) is None


def test_vm_disks_keep_key_order():
    config = {'virtio0': 'A:1/vm-1-disk-1.raw', 'ide0': 'A:1/vm-1-disk-0.raw', 'memory': 512}
    assert [d.key for d in tool.Guest.vm_disks(config)] == ['ide0', 'virtio0']


def test_names_are_the_originals():
    moment = datetime.datetime(2024, 3, 13, 15, 42, 47, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    stamp = tool.Names.utc_stamp(moment)
    assert stamp == '2024-03-13_14:42:47+0000'
    assert tool.Names.storage_snapshot_name(stamp) == 'proxmox_snapshot_2024-03-13_14:42:47+0000'
    assert tool.Names.snapshot_file_path('images/100/vm-100-disk-0.raw', stamp) == \
        'images/100/vm-100-disk-0-snapshot-2024-03-13_14:42:47+0000.raw'
    assert tool.Names.snapshot_file_path('images/100/vm-100-disk-1.qcow2', stamp) == \
        'images/100/vm-100-disk-1-snapshot-2024-03-13_14:42:47+0000.qcow2'
    assert tool.Ontap.volume_name_for_export('/proxmox_storage01') == 'proxmox_storage01'
    assert tool.Ontap.volume_name_for_export('/vol/a/b') == 'volab'
    assert [tool.Ontap.junction_path(e) for e in ('/proxmox_storage01/', '/vol/a', '/')] == ['/proxmox_storage01', '/vol/a',
                                                                                      '/']
    assert tool.Names.clone_volume_names('v', 'S-CLONE', 'S') == ['v_clone', 'v_clone_S_CLONE']
    assert tool.Names.clone_volume_names('v', 'S-MARCH', 'S') == ['v_clone_S_MARCH']
    assert tool.Names.flexclone_name('proxmox_storage01') == 'proxmox_storage01_clone'
    assert tool.Names.clone_storage_id('ONTAP01') == 'ONTAP01-CLONE'


def test_set_file_names_read_back_what_naming_writes():
    stamp = '2024-03-13_14:42:47+0000'
    for kind in ('snapshot', 'prerestore'):
        directory, name = tool.Names.snapshot_file_path('images/100/vm-100-disk-0.raw', stamp, kind).rsplit('/', 1)
        found = tool.Names.snapshot_file('ONTAP01', directory, name, 42)
        assert found == tool.SnapshotFile('ONTAP01', f'images/100/{name}', 'vm-100-disk-0', kind, stamp, '.raw', 42)
        assert found.source_file == 'vm-100-disk-0.raw'
    assert tool.Names.snapshot_file_path('images/100/vm-100-disk-0.raw', stamp, 'prerestore') == \
        'images/100/vm-100-disk-0-prerestore-2024-03-13_14:42:47+0000.raw'


@pytest.mark.parametrize('name', ['vm-100-disk-0.raw', 'vm-100-disk-0-snapshot-2024-03-13.raw',
                                  'vm-100-disk-0-snapshot-2024-03-13_14:42:47+0000.iso',
                                  'vm-100-state-suspend-2024-03-13.raw'])
def test_files_that_belong_to_no_set(name):
    assert tool.Names.snapshot_file('S', 'images/100', name) is None


def set_file(storage, source, stamp, kind='snapshot', size=1):
    stem, ext = source.rsplit('.', 1)
    return tool.SnapshotFile(storage, f'images/100/{stem}-{kind}-{stamp}.{ext}', stem, kind, stamp, '.' + ext, size)


def test_sets_are_grouped_by_stamp_oldest_first():
    a = set_file('A', 'vm-100-disk-0.raw', '2024-03-14_00:00:00+0000')
    b = set_file('B', 'vm-100-disk-1.raw', '2024-03-13_00:00:00+0000')
    c = set_file('A', 'vm-100-disk-1.raw', '2024-03-13_00:00:00+0000')
    sets = tool.VmSnapshots.by_stamp([a, b, c])
    assert list(sets) == ['2024-03-13_00:00:00+0000', '2024-03-14_00:00:00+0000']
    assert sets['2024-03-13_00:00:00+0000'] == [c, b]


def test_set_files_pair_with_the_disks_they_were_cloned_from():
    disks = [tool.Guest.parse_disk('scsi0', 'A:100/vm-100-disk-0.raw'), tool.Guest.parse_disk('scsi1', 'B:100/vm-100-disk-1.raw'),
             tool.Guest.parse_disk('scsi2', 'A:100/vm-100-disk-2.raw')]
    stamp = '2024-03-13_00:00:00+0000'
    same = set_file('A', 'vm-100-disk-0.raw', stamp)
    other_storage = set_file('A', 'vm-100-disk-1.raw', stamp)
    gone = set_file('A', 'vm-100-disk-9.raw', stamp)
    pairs, missing, orphans = tool.VmSnapshots.match_disks(disks, [same, other_storage, gone])
    assert pairs == [(disks[0], same)]
    assert missing == disks[1:]
    assert orphans == [other_storage, gone]


TWO_DISKS = [tool.Guest.parse_disk('scsi0', 'A:100/vm-100-disk-0.raw'), tool.Guest.parse_disk('scsi1', 'A:100/vm-100-disk-1.raw')]
# What a set holds of a VM with TWO_DISKS: (storage, source file) of each of its files.
HOLDS = {'full': [('A', 'vm-100-disk-0.raw'), ('A', 'vm-100-disk-1.raw')],
         'part': [('A', 'vm-100-disk-0.raw')],
         'full+gone': [('A', 'vm-100-disk-0.raw'), ('A', 'vm-100-disk-1.raw'), ('A', 'vm-100-disk-9.raw')],
         'gone': [('A', 'vm-100-disk-9.raw')],
         'elsewhere': [('A', 'vm-100-disk-0.raw'), ('B', 'vm-100-disk-1.raw')]}


def day_stamp(day):
    return f'2024-03-{day:02d}_00:00:00+0000'


def vm_set(day, holds):
    return [set_file(storage, source, day_stamp(day)) for storage, source in HOLDS[holds]]


@pytest.mark.parametrize('holds, missing', [
    ('full', []), ('part', ['scsi1']), ('full+gone', []), ('gone', ['scsi0', 'scsi1']), ('elsewhere', ['scsi1'])])
def test_a_set_lacking_a_current_disk_is_incomplete_and_files_of_removed_disks_do_not_matter(holds, missing):
    assert [d.key for d in tool.VmSnapshots.missing_disks(TWO_DISKS, vm_set(1, holds))] == missing


@pytest.mark.parametrize('sets, keep, made, deleted', [
    # every set complete: the newest N stay, as always
    ({1: 'full', 2: 'full', 3: 'full'}, 2, 4, [1, 2]),
    # an incomplete set is not counted among the N ...
    ({1: 'full', 2: 'part', 3: 'full'}, 2, 4, [1, 2]),
    # ... and stays while it is newer than the oldest complete set kept
    ({1: 'full', 2: 'full', 3: 'part'}, 2, 4, [1]),
    ({1: 'part', 2: 'full', 3: 'part', 4: 'full', 5: 'part'}, 2, 6, [1, 2, 3]),
    # fewer than N complete sets: nothing goes, incomplete or not
    ({1: 'part', 2: 'part'}, 2, 3, []),
    ({1: 'part', 2: 'full'}, 2, 3, [1]),
    # files of a removed disk leave a set complete; only such files make it incomplete
    ({1: 'full', 2: 'full+gone', 3: 'part'}, 2, 4, [1]),
    ({1: 'full', 2: 'gone'}, 2, 3, []),
    # this run's set counts as complete and is never deleted, also behind a clock ahead
    ({1: 'full', 2: 'part'}, 1, 2, [1]),
    ({1: 'full', 9: 'full'}, 1, 5, [1]),
])
def test_keep_counts_only_complete_sets_and_never_deletes_one_newer_than_a_kept_one(sets, keep, made, deleted):
    files = {day_stamp(day): vm_set(day, holds) for day, holds in sets.items()}
    assert tool.VmSnapshots.to_prune(files, TWO_DISKS, keep, day_stamp(made)) == [day_stamp(day) for day in deleted]


def test_set_files_attached_as_disks_are_found_but_unused_ones_are_not():
    stamp = '2024-03-13_00:00:00+0000'
    attached, unused, elsewhere = (set_file('A', 'vm-100-disk-0.raw', stamp), set_file('A', 'vm-100-disk-1.raw', stamp),
                                   set_file('B', 'vm-100-disk-0.raw', stamp))
    config = {'scsi0': 'A:100/vm-100-disk-0.raw', 'scsi5': f'A:100/vm-100-disk-0-snapshot-{stamp}.raw,backup=0',
              'unused0': f'A:100/vm-100-disk-1-snapshot-{stamp}.raw'}
    assert tool.Guest.attached_snapshot_files(config, [attached, unused, elsewhere]) == {attached.path: 'scsi5'}


UTC = datetime.UTC


@pytest.mark.parametrize('text, utc', [
    ('2024-10-27T00:30:00Z', datetime.datetime(2024, 10, 27, 0, 30, tzinfo=UTC)),
    ('2024-10-27T02:30:00+02:00', datetime.datetime(2024, 10, 27, 0, 30, tzinfo=UTC)),
    ('2024-10-27T02:15:00+0100', datetime.datetime(2024, 10, 27, 1, 15, tzinfo=UTC)),
    ('2019-03-13T13:05:00-04:00', datetime.datetime(2019, 3, 13, 17, 5, tzinfo=UTC)),     # reference §6
    ('2024-03-13T14:42:47.250+00:00', datetime.datetime(2024, 3, 13, 14, 42, 47, 250000, tzinfo=UTC)),
    ('2024-03-13T14:42:47', None),      # no offset: no place in time
    ('yesterday', None), ('', None), (None, None)])
def test_ontap_times_are_read_as_times(text, utc):
    moment = tool.Ontap.parse_time(text)
    assert moment == utc and (moment is None or moment.utcoffset() is not None)


def test_snapshots_sort_by_time_not_by_text_across_a_dst_change():
    records = [{'name': 'c', 'create_time': '2024-10-27T03:00:00+01:00'},   # 02:00Z
               {'name': 'b', 'create_time': '2024-10-27T02:15:00+01:00'},   # 01:15Z, after the change
               {'name': 'a', 'create_time': '2024-10-27T02:30:00+02:00'},   # 00:30Z, before it
               {'name': 'x', 'create_time': None}, {'name': 'w'},
               {'name': 'e', 'create_time': '2024-10-27T01:15:00Z'}]         # b's time: a tie, by name
    assert [r['name'] for r in tool.Volume.by_creation(records)] == ['w', 'x', 'a', 'b', 'e', 'c']


def test_free_unused_keys():
    assert tool.Guest.free_unused_keys({'unused0': 'x', 'unused2': 'y', 'scsi0': 'z'}, 3) == ['unused1', 'unused3',
                                                                                         'unused4']
    with pytest.raises(tool.Failure, match='no free unusedN slot'):
        tool.Guest.free_unused_keys({f'unused{n}' for n in range(255)}, 2)


@pytest.mark.parametrize('value, on', [('1', True), ('enabled=1,fstrim_cloned_disks=1', True), ('0', False),
                                       (None, False), ('enabled=0', False), (1, True)])
def test_agent_enabled(value, on):
    assert tool.Guest.agent_enabled(value) is on


def test_vm_storages_include_unused_disks():
    config = {'scsi0': 'A:100/vm-100-disk-0.raw', 'unused0': 'B:100/vm-100-disk-1.raw', 'ide2': 'C:iso/x.iso,media=cdrom'}
    assert tool.Guest.storages(config) == {'A', 'B'}


@pytest.mark.parametrize('status, ok', [
    ('OK', True), ('WARNINGS: 1', True), ('WARNINGS: 12', True), ('VM 100 already running', False),
    ('unexpected status', False), ('WARNINGS:', False), ('', False), (None, False)])
def test_task_exit_status(status, ok):
    assert tool.Pve.task_succeeded(status) is ok


def test_upid_node():
    upid = 'UPID:pve2:000003E8:00001B58:65F1B2C3:qmstart:100:root@pam:'
    assert tool.Pve.upid_node(upid) == 'pve2'
    with pytest.raises(ValueError):
        tool.Pve.upid_node('not-a-upid')


@pytest.mark.parametrize('value, text', [
    (None, '-'), (0, '0 B'), (1023, '1023 B'), (1536, '1.5 KiB'), (3 * 2 ** 30, '3.0 GiB')])
def test_human_size(value, text):
    assert tool.Output.human_size(value) == text


def test_flatten_and_table():
    assert tool.Output.flatten({'a': {'b': 1, 'c': {'d': 2}}, '_links': {}, 'e': 3}) == {'a.b': 1, 'a.c.d': 2, 'e': 3}
    table = tool.Output.format_table([('NAME', 'n'), ('SIZE', 's')], [{'n': 'long-name', 's': 1}])
    assert table.splitlines() == ['NAME       SIZE', 'long-name  1']


@pytest.mark.parametrize('text, ok', [('100', True), ('999999999', True), ('99', False), ('1e3', False),
                                      ('abc', False), ('-100', False)])
def test_vm_id_guard(text, ok):
    if ok:
        assert tool.Arg.vm_id(text) == int(text)
    else:
        with pytest.raises(Exception, match='is no VM id'):
            tool.Arg.vm_id(text)


@pytest.mark.parametrize('job, read, expected', [(600, 120, 115), (600, 300, 120), (30, 120, 30), (600, 3, 1),
                                                 (0.5, 120, 1)])
def test_ontap_answers_a_job_before_our_read_timeout(job, read, expected):
    assert tool.Ontap.return_timeout(tool.Timeouts(job=job, read=read)) == expected


# -- capture snapshots and held guests

@pytest.mark.parametrize('capture, leftover', [
    (tool.Names.capture_name('2024-03-13_14:42:47+0000', 100), 'pve_ontap_leftover_capture_2024-03-13_14:42:47+0000_vm100'),
    (tool.Names.shared_capture_name('2024-03-13_14:42:47+0000'), 'pve_ontap_leftover_capture_2024-03-13_14:42:47+0000_all')])
def test_capture_names_never_pass_for_storage_snapshots(capture, leftover):
    assert capture == 'pve_ontap_' + leftover.removeprefix('pve_ontap_leftover_')
    assert capture.startswith(tool.Names.CAPTURE_PREFIX)      # a lock record notes it as a capture
    assert tool.Names.leftover_name(capture) == leftover
    assert tool.Names.capture_of(leftover) == tool.Names.capture_of(capture) == capture
    assert not any(name.startswith(tool.Names.STORAGE_SNAPSHOT_PREFIX) for name in (capture, leftover))


NOW = datetime.datetime(2024, 3, 13, 15, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize('stamp, seconds, old', [
    ('2024-03-13_14:42:47+0000', 600, True), ('2024-03-13_14:55:00+0000', 600, False),
    ('2024-03-13_14:50:00+0000', 600, False), ('2024-03-13_14:49:59+0000', 600, True),
    ('2099-01-01_00:00:00+0000', 0, False), ('no stamp', 600, True)])
def test_a_noted_capture_is_due_once_older_than_the_age(stamp, seconds, old):
    assert tool.Names.stamp_older_than(stamp, seconds, NOW) is old


@pytest.mark.parametrize('message, too_long', [
    ("VM 106 qmp command 'guest-fsfreeze-thaw' failed - couldn't hold writes: fsfreeze is limited up to 10 seconds",
     True),
    ('VM 100 qmp command failed - timeout', False), ('QEMU guest agent is not running', False)])
def test_a_thaw_that_says_vss_gave_up_the_freeze(message, too_long):
    assert tool.Guest.frozen_too_long(tool.ProxmoxError(message)) is too_long


@pytest.mark.parametrize('value, freezes', [
    ('1', True), ('enabled=1', True), ('0', False), ('enabled=0,freeze-fs=1', False), ('1,freeze-fs=0', False),
    ('enabled=1,freeze-fs-on-backup=0', False), ('freeze-fs=0,enabled=1', False), ('1,guest-fsfreeze=no', False),
    ('1,freeze-fs=1,fstrim_cloned_disks=1', True), (None, False), ('type=isa', False), ('ON', True)])
def test_agent_freezing_as_pve_reads_it(value, freezes):
    assert tool.Guest.agent_freezes(value) is freezes


# -- what a VM snapshot carries: its config and manifest

KEY = bytes(range(32))
STAMP = '2024-03-13_14:42:47+0000'


@pytest.mark.parametrize('consistency', tool.Names.CONSISTENCIES)
def test_a_manifest_name_belongs_to_the_set_and_is_never_an_image(consistency):
    path = tool.Names.manifest_path(100, STAMP, consistency)
    directory, name = path.rsplit('/', 1)
    assert directory == 'images/100' and not name.startswith('snap-')
    assert not tool.Guest.IMAGE_VOLNAME.match(path.removeprefix('images/')) and not tool.Names.SNAPSHOT_FILE.match(name)
    record = tool.Names.snapshot_file('ONTAP01', directory, name)
    assert (record.stamp, record.kind, record.is_record) == (STAMP, 'snapshot', True)
    assert tool.Consistency.of_files([record]) == consistency


def test_a_config_file_of_a_set_made_by_an_earlier_build_still_belongs_to_the_set():
    record = tool.Names.snapshot_file('ONTAP01', 'images/100', f'vm-100-snapshot-{STAMP}.conf')
    assert (record.stamp, record.kind, record.is_record) == (STAMP, 'snapshot', True)
    assert tool.Consistency.of_files([record]) == 'unknown'


@pytest.mark.parametrize('saved', [b'memory: 512\n', b'#caf\xe9 in Latin-1\nmemory: 512\n', b''])
def test_a_manifest_holds_the_config_byte_for_byte(saved):
    disk = tool.Disk('scsi0', 'ONTAP01', 'ONTAP01:100/vm-100-disk-0.raw', 'images/100/vm-100-disk-0.raw')
    manifest = tool.Manifest.build({'vmid': 100, 'node': 'pve1'}, [disk], {'scsi0': disk.volid + ',size=1G'}, STAMP,
                                   'atomic', {'ONTAP01': ('a', 'svm1', 'vol1')}, saved, 'api', '0.2.0',
                                   {'scsi0': 'images/100/x.raw'})
    read, signed = tool.Manifest.read(manifest.encode(), 'm', 100, STAMP, KEY)
    assert read['config'].encode('utf-8', 'surrogateescape') == saved and not signed
    record = tool.json.loads(manifest)
    assert record['disks'] == [{'key': 'scsi0', 'volid': disk.volid, 'clone': 'images/100/x.raw', 'size': 2**30,
                                'storage': 'ONTAP01', 'cluster': 'a', 'svm': 'svm1', 'volume': 'vol1',
                                'format': 'raw'}]


def test_a_manifest_never_holds_the_cloud_init_password():
    conf = b'cipassword: $5$salt$hash\nmemory: 512\n\n[before-update]\ncipassword: Secr3t-on-Windows\n'
    manifest = tool.Manifest.build({'vmid': 100}, [], {}, STAMP, 'shutdown', {}, conf, 'api', '0.1.0', {})
    text = tool.Manifest.read(manifest.encode(), 'm', 100, STAMP, None)[0]['config']
    assert text == 'cipassword: **********\nmemory: 512\n\n[before-update]\ncipassword: **********\n'
    assert 'salt' not in manifest and 'Secr3t' not in manifest


@pytest.mark.parametrize('data, why', [
    (b'{"tool": "pve-ontap-snapshot"}', 'it holds no config'), (b'not json', 'it is no JSON'),
    (b'[1]', 'it holds no config'), (b'{"config": 3}', 'it holds no config'), (b'\xff\xfe', 'it is no JSON'),
    (b'{"config": "", "vmid": 101, "stamp": "' + STAMP.encode() + b'"}', 'of guest 101, snapshot'),
    (b'{"config": "", "vmid": 100, "stamp": "2020-01-01_00:00:00+0000"}', "snapshot '2020-01-01_00:00:00+0000'")])
def test_a_manifest_that_cannot_be_read_or_is_of_another_snapshot_is_an_error_naming_it(data, why):
    with pytest.raises(tool.ManifestError, match=f'^manifest m .*{re.escape(why)}'):
        tool.Manifest.read(data, 'm', 100, STAMP, None)


def test_a_signed_manifest_reads_back_signed_and_fails_with_any_change_or_another_key():
    manifest = tool.Manifest.build({'vmid': 100}, [], {}, STAMP, 'shutdown', {}, b'memory: 512\n', 'api', '0.1.0', {},
                                   KEY)
    assert tool.Manifest.read(manifest.encode(), 'm', 100, STAMP, KEY)[1] is True
    assert tool.Manifest.read(manifest.encode(), 'm', 100, STAMP, None)[1] is False     # off a node: no key to check
    changed = manifest.replace('memory: 512', 'memory: 513')
    for data, key in ((changed, KEY), (manifest, bytes(32))):
        with pytest.raises(tool.ManifestError, match='fails its signature check'):
            tool.Manifest.read(data.encode(), 'm', 100, STAMP, key)


def test_a_set_without_a_manifest_has_an_unknown_consistency():
    clone = tool.Names.snapshot_file('ONTAP01', 'images/100', f'vm-100-disk-0-snapshot-{STAMP}.raw')
    assert not clone.is_record and tool.Consistency.of_files([clone]) == 'unknown'
    assert tool.Names.snapshot_file('ONTAP01', 'images/100', f'vm-100-snapshot-{STAMP}.sloppy.manifest.json') is None


@pytest.mark.parametrize('mode, paused, running, instants, consistency', [
    (None, False, True, 2, 'running'), (None, False, True, 1, 'atomic'), (None, False, False, 0, 'shutdown'),
    ('pause', True, True, 2, 'paused'), ('freeze', True, True, 2, 'frozen'), ('suspend', True, True, 2, 'suspended'),
    ('shutdown', True, True, 2, 'shutdown'),
    # a mode that did not act (a VM paused by an I/O error is captured as it is)
    ('freeze', False, True, 1, 'atomic'), ('suspend', False, False, 0, 'shutdown'),
])
def test_snapshot_consistency(mode, paused, running, instants, consistency):
    assert tool.Consistency.of_vm_snapshot(mode, paused, running, instants) == consistency


def test_config_text_writes_the_api_config_as_pve_writes_a_conf_file():
    config = {'memory': 2048, 'digest': 'abc', 'boot': 'order=scsi0', 'description': 'web: nginx\n100% ok\nÜ\n\n',
              'scsi0': 'ONTAP01:100/vm-100-disk-0.raw,size=32G'}
    assert tool.Guest.config_text(config) == ('#web%3A nginx\n#100% ok\n#%C3%9C\n'
                                        'boot: order=scsi0\nmemory: 2048\nscsi0: ONTAP01:100/vm-100-disk-0.raw,size=32G\n')
    assert tool.Guest.config_text({'memory': 512, 'description': ''}) == 'memory: 512\n'


@pytest.mark.parametrize('value, size', [
    ('ONTAP01:100/vm-100-disk-0.raw,size=32G', 32 * 2**30), ('ONTAP01:100/vm-100-disk-5.raw,efitype=4m,size=528K',
                                                             528 * 2**10),
    ('ONTAP01:100/vm-100-disk-6.raw,size=4M,version=v2.0', 4 * 2**20), ('size=1.5T', int(1.5 * 2**40)),
    ('ONTAP01:100/vm-100-disk-0.raw,size=4096', 4096), ('ONTAP01:100/vm-100-disk-0.raw', None),
    ('ONTAP01:100/vm-100-disk-0.raw,oldsize=1G', None),
])
def test_drive_size(value, size):
    assert tool.Guest.drive_size(value) == size


