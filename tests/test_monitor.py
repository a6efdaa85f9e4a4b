"""pve-ontap-snapshot monitor: whether the snapshots one counts on exist and are fresh, as a
monitoring system reads it (the first line OK, WARNING, CRITICAL or UNKNOWN; exit 0 to 3),
and the metrics files for node_exporter's textfile collector; and every run that changes
something recording how it ended, for monitor to read."""

import datetime
import json
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families
from world import add_containers, closed_port, make_set

import pve_ontap_snapshot as tool


def ago(**delta):
    return (datetime.datetime.now(datetime.UTC) - datetime.timedelta(**delta)).isoformat()


def stamp_ago(**delta):
    return (datetime.datetime.now(datetime.UTC) - datetime.timedelta(**delta)).strftime(tool.Names.STAMP_FORMAT)


def storage_snapshot(world, label=None, vol='proxmox_storage01', emu=None, **age):
    """A storage snapshot `age` old (a timedelta's keywords), as storage create names it."""
    when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(**age)
    name = f'proxmox_snapshot_{when.strftime(tool.Names.STAMP_FORMAT)}'
    snapshot = (emu or world.a).add_snapshot(vol, name, create_time=when.isoformat())
    if label:
        snapshot.snapmirror_label = label
    return name


def both_fresh(world):
    storage_snapshot(world, hours=2)
    storage_snapshot(world, hours=3, vol='proxmox_storage02', emu=world.b)


def monitor(world, *argv):
    result = world.run('monitor', *argv)
    head, *lines = result.out.splitlines()
    return result, head, lines


def set_ago(world, vmid, **age):
    """A snapshot of VM `vmid`'s disk on ONTAP01, `age` old, as the original left it (make_set)."""
    stamp = stamp_ago(**age)
    make_set(world, vmid, stamp, [(world.vol1, f'vm-{vmid}-disk-0.raw')])
    return stamp


# -- the verdict

def test_fresh_storage_snapshots_are_ok(world):
    both_fresh(world)

    result, head, lines = monitor(world)

    assert result.code == 0, result.err
    assert head == 'OK: 2 storage(s) and 0 VM(s) fresh'
    assert [line.split()[:3] for line in lines] == [['OK', 'storage', 'ONTAP01:'], ['OK', 'storage', 'ONTAP02:']]
    assert '2h old (warn 1d 2h, crit 2d 2h), 1 snapshot(s)' in lines[0]


@pytest.mark.parametrize('hours, state, code', [(27, 'WARNING', 1), (51, 'CRITICAL', 2)])
def test_a_stale_storage_snapshot_warns_then_is_critical(world, hours, state, code):
    storage_snapshot(world, hours=hours)
    storage_snapshot(world, hours=1, vol='proxmox_storage02', emu=world.b)

    result, head, lines = monitor(world)

    assert result.code == code
    assert head.startswith(f'{state}: storage ONTAP01: proxmox_snapshot_')
    assert f'{hours // 24}d {hours % 24}h old' in head
    assert [line.split()[0] for line in lines] == [state, 'OK']


def test_no_snapshot_at_all_is_critical(world):
    storage_snapshot(world, hours=1)

    result, head, _ = monitor(world)

    assert result.code == 2
    assert head == 'CRITICAL: storage ONTAP02: no snapshot'


def test_the_ages_come_from_the_options_else_config_ini_else_the_defaults(world):
    both_fresh(world)
    assert monitor(world, '-warn', '1h')[0].code == 1
    assert monitor(world, '-warn', '30m', '-crit', '90m')[0].code == 2
    text = world.config.read_text().replace('[ONTAP02]\n', '[ONTAP02]\nwarn_age = 1h\ncrit_age = 2d\n')
    world.config.write_text(text)

    result, head, lines = monitor(world)

    assert result.code == 1
    assert head.startswith('WARNING: storage ONTAP02:') and '(warn 1h, crit 2d)' in head
    assert lines[0].startswith('OK        storage ONTAP01:')


def test_a_label_counts_only_its_snapshots(world):
    storage_snapshot(world, hours=30, label='daily')
    storage_snapshot(world, hours=1)

    result, head, _ = monitor(world, '-storage', 'ONTAP01', '-label', 'daily')

    assert result.code == 1
    assert head.startswith('WARNING: storage ONTAP01 (label daily): proxmox_snapshot_')
    assert '1 snapshot(s)' in head


def test_a_cluster_that_cannot_be_reached_is_unknown(world):
    storage_snapshot(world, hours=1)
    world.write_config(ONTAP02=f'host = 127.0.0.1:{closed_port()}\nuser = admin\npass = x\nverify = false\n')

    result, head, lines = monitor(world)

    assert result.code == 3
    assert head.startswith('UNKNOWN: storage ONTAP02: not checked: ONTAP 127.0.0.1:')
    assert lines[0].startswith('OK        storage ONTAP01:')


def test_critical_goes_before_unknown_before_warning(world):
    storage_snapshot(world, hours=30)
    world.write_config(ONTAP02=f'host = 127.0.0.1:{closed_port()}\nuser = admin\npass = x\nverify = false\n')
    assert monitor(world)[0].code == 3
    assert monitor(world, '-crit', '29h')[0].code == 2


@pytest.mark.parametrize('argv', [('monitor', '-bogus'), ('monitor', '-warn', 'soon')])
def test_a_command_line_it_cannot_use_is_unknown(world, argv):
    result = world.run(*argv)
    assert result.code == 3
    assert result.out == 'UNKNOWN: the command line is not understood (see the error above)\n'


def test_a_config_it_cannot_use_is_unknown(world):
    world.config.write_text('[proxmox]\nproxmox_host = x\n')
    os.chmod(world.config, 0o600)
    result = world.run('monitor')
    assert result.code == 3
    assert result.out.startswith(f'UNKNOWN: {world.config}: [proxmox] lacks proxmox_user')


def test_json_gives_every_item_with_its_age_and_state(world):
    name = storage_snapshot(world, hours=2)

    result = world.run('-output', 'json', 'monitor')

    assert result.code == 2
    items = json.loads(result.out)
    assert [(i['kind'], i['name'], i['state'], i['newest']) for i in items] == [
        ('storage', 'ONTAP01', 'OK', name), ('storage', 'ONTAP02', 'CRITICAL', None)]
    assert 7100 < items[0]['age_seconds'] < 7300 and items[1]['age_seconds'] is None


# -- VMs, and what else it finds

def test_each_vms_newest_complete_snapshot_counts(world):
    both_fresh(world)
    old = set_ago(world, 101, hours=30)
    set_ago(world, 101, hours=40)
    world.a.requests.clear()

    result, head, _ = monitor(world, '-vm', 101)

    assert result.code == 1
    assert head == f'WARNING: VM 101: {old} 1d 6h old (warn 1d 2h, crit 2d 2h), 2 snapshot(s)'
    # a listing of the volume's snapshots and one of the VM's directory: nothing per snapshot
    assert [r['path'].rsplit('/', 1)[-1] for r in world.ontap_requests(on=world.a)
            if r['path'] != '/api/storage/volumes'] == ['snapshots', '101']


def test_an_incomplete_snapshot_and_an_empty_manifest_are_findings(world):
    both_fresh(world)
    set_ago(world, 101, hours=1)
    stamp = stamp_ago(minutes=30)
    (world.vol1.path / f'images/101/vm-101-snapshot-{stamp}.shutdown.manifest.json').write_bytes(b'')

    result, _, lines = monitor(world, '-vm', 101)

    assert result.code == 1
    assert lines[-1] == (f'WARNING   VM 101: snapshot {stamp}: incomplete (lacks scsi0); its manifest '
                         f'images/101/vm-101-snapshot-{stamp}.shutdown.manifest.json is empty')


def test_all_checks_every_vm_on_a_configured_storage(world):
    both_fresh(world)
    assert world.run('vm', 'create', '-vm', 100, 101).code == 0

    result, head, lines = monitor(world, '-all')

    assert result.code == 0, result.out + result.err
    assert head == 'OK: 2 storage(s) and 2 VM(s) fresh'
    assert [line.split()[:3] for line in lines[2:]] == [['OK', 'VM', '100:'], ['OK', 'VM', '101:']]


def test_a_vm_without_a_complete_snapshot_is_critical_and_an_unknown_id_unknown(world):
    both_fresh(world)

    result, head, lines = monitor(world, '-vm', 101, 999)

    assert result.code == 2
    assert head == 'CRITICAL: VM 101: no complete snapshot'
    assert lines[-1] == 'UNKNOWN   VM 999: not checked: VM 999 does not exist'


def test_a_leftover_capture_is_a_finding(world):
    both_fresh(world)
    world.a.add_snapshot('proxmox_storage01', f'{tool.Names.LEFTOVER_PREFIX}capture_x', create_time=ago(hours=3))
    world.a.add_snapshot('proxmox_storage01', f'{tool.Names.CAPTURE_PREFIX}fresh', create_time=ago(minutes=1))

    result, head, lines = monitor(world)

    assert result.code == 1
    assert head.startswith(f'WARNING: storage ONTAP01: capture snapshot {tool.Names.LEFTOVER_PREFIX}capture_x left since')
    assert len(lines) == 3      # the running capture is none


def test_containers_are_checked_as_vms_are_and_each_id_by_its_kind(world):
    both_fresh(world)
    add_containers(world)
    assert world.run('ct', 'create', '-ct', 201, '-no-register').code == 0

    result, head, lines = monitor(world, '-ct', 201, 200, '-vm', 200)

    assert result.code == 2
    assert head.startswith('CRITICAL: CT 200: no complete snapshot')
    assert [line.split(':')[0].split() for line in lines] == [
        ['OK', 'storage', 'ONTAP01'], ['OK', 'storage', 'ONTAP02'], ['UNKNOWN', 'VM', '200'], ['OK', 'CT', '201'],
        ['CRITICAL', 'CT', '200']]
    assert lines[2].endswith('not checked: CT 200 is a container, not a virtual machine: give it with -ct')
    assert ', 1 snapshot(s)' in lines[3]


def test_all_checks_every_vm_and_ct_and_the_textfile_has_both(world, tmp_path):
    both_fresh(world)
    add_containers(world)
    assert world.run('ct', 'create', '-ct', 201, '-no-register').code == 0
    assert world.run('vm', 'create', '-vm', 101, '-no-register').code == 0
    textfile = tmp_path / 'textfile'
    textfile.mkdir(mode=0o755)

    result, _, lines = monitor(world, '-all', '-textfile', textfile)

    checked = {tuple(line.split(':')[0].split()[1:]) for line in lines}
    assert {('VM', '101'), ('VM', '100'), ('CT', '201'), ('CT', '200')} <= checked
    metrics = families(textfile / 'pve_ontap_snapshot.prom')
    assert [s.labels['vmid'] for s in metrics['pve_ontap_snapshot_ct_newest_snapshot_timestamp_seconds'].samples] == ['201']
    assert [s.labels['vmid'] for s in metrics['pve_ontap_snapshot_vm_newest_snapshot_timestamp_seconds'].samples] == ['101']
    assert result.code == 2     # VM 100 and CT 200 have none


def test_all_goes_without_vm_and_ct(world):
    result, head, _ = monitor(world, '-all', '-ct', 201)

    assert result.code == 3 and head == 'UNKNOWN: -all checks every VM and CT: give it without -vm and -ct'


# -- runs that report themselves

def test_a_run_records_how_it_ended_and_monitor_warns_of_one_that_failed(world, cluster_dir):
    both_fresh(world)
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    assert world.run('storage', 'create', '-storage', 'ONTAP02').code == 0
    world.b.fail('POST', r'/snapshots$', status=500, message='no space left')
    assert world.run('storage', 'create', '-storage', 'ONTAP02').code == 1

    result, head, _ = monitor(world)

    assert result.code == 1
    assert head.startswith('WARNING: storage create ONTAP02: failed at ') and 'no space left' in head
    records = {name: json.loads((cluster_dir / 'pve-ontap-snapshot' / name).read_text())
               for name in ('storage-create@ONTAP01.run', 'storage-create@ONTAP02.run')}
    one = records['storage-create@ONTAP01.run']['last']
    made = max(world.vol1.snapshots)
    assert (one['outcome'], one['more_changes']) == ('done', 0)
    assert one['changes'] == [f'storage ONTAP01: snapshot {made} of volume proxmox_storage01 created']
    two = records['storage-create@ONTAP02.run']
    assert (two['last']['outcome'], two['last_success']['outcome'], two['last_failure']['outcome']) == (
        'failed', 'done', 'failed')
    assert two['last']['changes'] == [] and len(two['last_success']['changes']) == 1


def test_a_run_records_what_it_changed_up_to_twenty_changes(world, cluster_dir):
    stamps = sorted(set_ago(world, 101, days=2, minutes=minutes) for minutes in range(25))

    assert world.run('vm', 'create', '-vm', 101, '-keep', 1).code == 0

    last = json.loads((cluster_dir / 'pve-ontap-snapshot' / 'vm-create@101.run').read_text())['last']
    assert len(last['changes']) == 20 and last['more_changes'] == 6      # 1 made, 25 deleted
    assert last['changes'][0].startswith('VM 101: snapshot ') and ' created (' in last['changes'][0]
    assert last['changes'][1:] == [f'VM 101: snapshot {stamp} deleted (-keep 1)' for stamp in stamps[:19]]


def test_a_dry_run_records_nothing(world, cluster_dir):
    assert world.run('-dry-run', 'storage', 'create', '-storage', 'ONTAP01').code == 0
    assert not list(cluster_dir.glob('**/*.run'))


# -- the textfile

def families(path):
    return {family.name: family for family in text_string_to_metric_families(path.read_text())}


def test_the_textfile_holds_the_snapshots_and_the_runs_as_prometheus_reads_them(world, tmp_path):
    textfile = tmp_path / 'textfile'
    textfile.mkdir(mode=0o755)
    name = storage_snapshot(world, hours=2)
    assert world.run('vm', 'create', '-vm', 101, '-textfile', textfile).code == 0

    result, _, _ = monitor(world, '-vm', 101, '-textfile', textfile)

    assert result.code == 2     # ONTAP02 has none
    snapshots = families(textfile / 'pve_ontap_snapshot.prom')
    runs = families(textfile / 'pve_ontap_snapshot_runs.prom')
    newest = {s.labels['storage']: s.value for s in snapshots['pve_ontap_snapshot_storage_newest_snapshot_timestamp_seconds'].samples}
    created = datetime.datetime.strptime(name.removeprefix('proxmox_snapshot_'), tool.Names.STAMP_FORMAT)
    assert newest == {'ONTAP01': created.replace(tzinfo=datetime.UTC).timestamp()}
    states = {(s.labels['kind'], s.labels['name']): s.value for s in snapshots['pve_ontap_snapshot_check_state'].samples}
    assert states == {('storage', 'ONTAP01'): 0, ('storage', 'ONTAP02'): 2, ('vm', '101'): 0}
    assert [s.labels for s in runs['pve_ontap_snapshot_run_succeeded'].samples] == [
        {'command': 'vm create', 'subject': '101'}]
    assert runs['pve_ontap_snapshot_run_duration_seconds'].samples[0].value > 0
    assert oct((textfile / 'pve_ontap_snapshot.prom').stat().st_mode & 0o777) == '0o644'
    assert sorted(p.name for p in textfile.iterdir()) == ['pve_ontap_snapshot.prom', 'pve_ontap_snapshot_runs.prom']


def test_a_monitor_that_can_check_nothing_says_unknown_in_the_textfile_too(world, tmp_path):
    textfile = tmp_path / 'textfile'
    textfile.mkdir(mode=0o755)
    storage_snapshot(world, hours=2)
    assert monitor(world, '-storage', 'ONTAP01', '-textfile', textfile)[0].code == 0
    world.config.write_text('[proxmox]\n')     # no proxmox_host: nothing can be checked

    result = world.run('monitor', '-storage', 'ONTAP01', '-textfile', textfile)

    assert result.code == 3 and result.out.startswith('UNKNOWN: ')
    states = families(textfile / 'pve_ontap_snapshot.prom')['pve_ontap_snapshot_check_state'].samples
    assert [(s.labels['kind'], s.value) for s in states] == [('monitor', 3)]


def test_a_failed_run_writes_its_textfile_too(world, tmp_path):
    world.a.fail('POST', r'/snapshots$', status=500, message='no space left')

    result = world.run('storage', 'create', '-storage', 'ONTAP01', '-textfile', tmp_path)

    assert result.code == 1
    runs = families(tmp_path / 'pve_ontap_snapshot_runs.prom')
    assert [s.value for s in runs['pve_ontap_snapshot_run_succeeded'].samples] == [0]
    assert runs['pve_ontap_snapshot_run_last_failure_timestamp_seconds'].samples[0].labels == {
        'command': 'storage create', 'subject': 'ONTAP01'}


def test_a_textfile_directory_another_user_could_change_is_refused(world, tmp_path):
    textfile = tmp_path / 'textfile'
    textfile.mkdir()
    os.chmod(textfile, 0o777)
    storage_snapshot(world, hours=2)

    result = world.run('monitor', '-storage', 'ONTAP01', '-textfile', textfile)

    assert result.code == 3
    assert result.out.startswith(f'UNKNOWN: directory {textfile} is owned by root')
    assert 'writable by group or others' in result.out
    assert not list(textfile.iterdir())


def test_label_values_are_escaped():
    lines = tool.Metrics.family('x', 'gauge', 'h', [({'subject': 'a"b\\c\nd'}, 1)])
    assert lines[-1] == 'pve_ontap_snapshot_x{subject="a\\"b\\\\c\\nd"} 1'
