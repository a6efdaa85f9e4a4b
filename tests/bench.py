"""Benchmark: round trips and wall time of each command against the test world.

    python tests/bench.py [--latency SECONDS] [--snapshots N] [--completion-only]
    python tests/bench.py --vms N [--older N] [--latency SECONDS] [--parallel N]

Builds the world of tests/world.py, adds a fixed latency to every request on both sides
(default 20 ms), then runs each command once and prints, per command, the requests sent
to ONTAP and to PVE, the wall time, and the target from the project's issue where there
is one; `vm create` of three running VMs shows both shapes of its capture snapshots (shared
by the run, one per volume; or with -pause one per VM and volume). For `vm create -suspend`
and `-pause` it also prints the pause window (suspend task done -> start or resume issued),
and at the end the time of one tab completion of -storage: as a whole process of the
clone's script, and, where the Debian package is installed, as a <TAB> through its bash
completion file, beside a bare `python3 -c 'import argparse, argcomplete'` measured in
turns with it in the same bash (target: at most 1.5 times that).
--completion-only measures the completions alone.

With --vms N it builds a cluster of N VMs instead (the test world's three and N-3 more, two
disks each, one on each ONTAP cluster, on two nodes, each with --older (3) older snapshots; all
stopped, so no capture is taken: running, they would add one capture create and one delete
per volume for the whole run) and prints the table of the scaling issue: requests, wall
time, the CPU time of the tool and of the servers (the emulators and fakepve, which share
the machine with it), and the tool's peak memory (as a process of its own, so that its
memory is its own) of vm create -all, vm create -all -keep 2, storage unmount and storage
restore -dry-run.
Numbers, not assertions: tests never time anything.
"""

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from world import ServedPve, World, add_vm_on_both_clusters, populate, start_emulators, write_disk, write_pmxcfs_configs

import pve_ontap_snapshot as tool

SCRIPT = Path(__file__).resolve().parent.parent / 'pve_ontap_snapshot.py'


def add_bench_vms(world, snapshots):
    """VMs 200 to 203 with four disks each, two on each cluster (203 stopped, the others
    running); a storage with many snapshots."""
    for vmid in (200, 201, 202, 203):
        config = {}
        for n, (key, sid, vol) in enumerate((('scsi0', 'ONTAP01', world.vol1), ('scsi1', 'ONTAP01', world.vol1),
                                             ('scsi2', 'ONTAP02', world.vol2), ('scsi3', 'ONTAP02', world.vol2))):
            name = f'vm-{vmid}-disk-{n}.raw'
            write_disk(vol, vmid, name, size=1 << 20)
            config[key] = f'{sid}:{vmid}/{name},size=1M'
        world.pve.add_vm(vmid, f'bench{vmid}', node='pve1', status='stopped' if vmid == 203 else 'running',
                         config=config)
    world.a.add_volume('bench_snapshots', svm='svm1')
    for n in range(snapshots):
        world.a.add_snapshot('bench_snapshots', f'proxmox_snapshot_2024-01-01_00:{n // 60:02d}:{n % 60:02d}+0000')
    world.pve.storages['BENCH'] = {'type': 'nfs', 'server': '127.0.0.1', 'export': '/bench_snapshots',
                                   'path': '/mnt/pve/BENCH', 'content': 'images', 'files': set(), 'volumes': {}}
    section = world.config.read_text().split('[ONTAP02]')[0].split('[ONTAP01]')[1]
    world.config.write_text(world.config.read_text() + f'[BENCH]{section}')


class PauseWindow:
    """Times the pause of vm create -suspend or -pause: suspend task done -> start or resume issued."""

    def __init__(self):
        self.marks = {}
        self._power = tool.Pve.power

    def __enter__(self):
        def timed(pve, vm, action, **params):
            if action in ('start', 'resume'):
                self.marks['start'] = time.monotonic()
            self._power(pve, vm, action, **params)
            if action == 'suspend':
                self.marks['suspended'] = time.monotonic()
        tool.Pve.power = timed
        return self

    def __exit__(self, *exc):
        tool.Pve.power = self._power

    @property
    def seconds(self):
        return self.marks['start'] - self.marks['suspended']


@contextlib.contextmanager
def on_a_node(world, really=True):
    """As on a PVE node (pve1): pmxcfs shows every guest's config (written from the fake's now)."""
    if not really:
        yield
        return
    saved = tool.Node.name, tool.Node.CONFIGS_DIR
    tool.Node.name = staticmethod(lambda: 'pve1')
    tool.Node.CONFIGS_DIR = str(write_pmxcfs_configs(world.pve, world.dir))
    try:
        yield
    finally:
        tool.Node.name, tool.Node.CONFIGS_DIR = saved


def measure(world, argv):
    """(ONTAP requests, PVE requests, seconds, exit code) of one command."""
    counts = len(world.a.requests) + len(world.b.requests), len(world.pve.requests)
    started = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = tool.main(['-config', str(world.config), '-loglevel', 'warn'] + [str(a) for a in argv])
    elapsed = time.monotonic() - started
    return (len(world.a.requests) + len(world.b.requests) - counts[0], len(world.pve.requests) - counts[1],
            elapsed, code)


def older_stamps(count):
    """The stamps of `count` older snapshots, a day apart from 2024-01-01 on."""
    return tuple(f'2024-01-{day:02d}_00:00:00+0000' for day in range(1, count + 1))


def add_many_vms(world, count, older=2):
    """VMs 1000 and up until the cluster has `count`: two disks each, one on each cluster,
    stopped (so that storage restore has no running guest to refuse), on both nodes, each with
    `older` older snapshots as runs before would have left them."""
    for vmid in range(1000, 1000 + count - len(world.pve.vms)):
        add_vm_on_both_clusters(world, vmid, node=('pve1', 'pve2')[vmid % 2], status='stopped',
                                older=older_stamps(older))
    world.pve.vm(100).status = 'stopped'


# Starts the tool and writes its peak memory (KiB) to argv[1]. The tool is its child, not
# the benchmark's: a process's ru_maxrss also counts what the process it was forked from held
# before the exec, and the benchmark holds the servers and the world.
LAUNCHER = """import os, sys
pid = os.spawnv(os.P_NOWAIT, sys.executable, [sys.executable] + sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], 'w') as out:
    out.write(f'{usage.ru_maxrss} {usage.ru_utime} {usage.ru_stime}')
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_process(world, argv):
    """(ONTAP requests, PVE requests, seconds, the tool's CPU seconds, the servers' CPU seconds, peak
    memory in MiB, exit code) of the tool as a process. The servers (both emulators and fakepve)
    run in this process: its CPU time meanwhile is theirs."""
    counts = len(world.a.requests) + len(world.b.requests), len(world.pve.requests)
    memory = world.dir / 'peak-memory'
    started, served = time.monotonic(), time.process_time()
    result = subprocess.run([sys.executable, '-c', LAUNCHER, str(memory), str(SCRIPT), '-config', str(world.config),
                             '-loglevel', 'warn'] + [str(a) for a in argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, check=False)
    elapsed, served = time.monotonic() - started, time.process_time() - served
    peak, user, system = memory.read_text().split()
    if result.returncode:
        print(result.stderr.decode()[-2000:], file=sys.stderr)
    return (len(world.a.requests) + len(world.b.requests) - counts[0], len(world.pve.requests) - counts[1],
            elapsed, float(user) + float(system), served, int(peak) / 1024, result.returncode)


def scale(args):
    """The table of --vms N."""
    directory = Path(tempfile.mkdtemp(prefix='pve-ontap-bench-'))
    # As on a PVE node: the tool's processes take their cluster lock in a directory of its own.
    os.mkdir(directory / 'priv')
    os.environ['PVE_ONTAP_SNAPSHOT_CLUSTER_DIR'] = str(directory / 'priv')
    served = ServedPve(directory, time_scale=1.0)
    served.pve.max_requests = 10 ** 8
    a, b = start_emulators(directory)
    try:
        populate(served.pve, a, b)
        world = World(served.pve, served.cafile, a, b, directory)
        add_many_vms(world, args.vms, args.older)
        snapshot = 'proxmox_snapshot_2024-01-01_00:00:00+0000'
        a.add_snapshot('proxmox_storage01', snapshot)
        for emu in (a, b):
            emu.latency = args.latency
        served.pve.slow_network(args.latency)
        parallel = ['-parallel', args.parallel] if args.parallel else []
        plan = [
            ('vm create -all', ['vm', 'create', '-all', *parallel]),
            ('vm create -all -keep 2', ['vm', 'create', '-all', '-keep', 2, *parallel]),
            ('storage mount (for the unmount)', ['storage', 'mount', '-storage', 'ONTAP01', '-snapshot', snapshot]),
            ('storage unmount', ['storage', 'unmount', '-storage', 'ONTAP01-CLONE']),
            ('storage restore -dry-run', ['-dry-run', 'storage', 'restore', '-storage', 'ONTAP01', '-snapshot',
                                         snapshot, '-yes']),
        ]
        rows = [(label, *run_process(world, command)) for label, command in plan]
    finally:
        a.stop()
        b.stop()
        served.stop()
    print(f'{len(world.pve.vms)} VMs with {args.older} older snapshots each, latency {args.latency * 1000:.0f} ms '
          'per request on both sides'
          f'{", -parallel " + str(args.parallel) if args.parallel else ""}\n')
    print(f'{"command":34} {"ONTAP":>6} {"PVE":>6} {"all":>6} {"wall":>8} {"tool CPU":>9} {"servers":>8} '
          f'{"memory":>8}  exit')
    for label, ontap, pve, seconds, cpu, served, memory, code in rows:
        print(f'{label:34} {ontap:6d} {pve:6d} {ontap + pve:6d} {seconds:6.1f} s {cpu:7.1f} s {served:6.1f} s '
              f'{memory:5.0f} MiB  {code}')
    return 0 if all(row[-1] == 0 for row in rows) else 1


def completion_seconds(config, runs=5):
    """Median wall time of one tab completion of `-storage` as a whole process."""
    line = f'pve-ontap-snapshot -config {config} storage list -storage O'
    env = dict(os.environ, _ARGCOMPLETE='1', COMP_LINE=line, COMP_POINT=str(len(line)),
               _ARGCOMPLETE_STDOUT_FILENAME=os.devnull)
    times = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run([sys.executable, str(SCRIPT)], env=env, check=True, capture_output=True)
        times.append(time.monotonic() - started)
    return statistics.median(times)


INSTALLED_COMPLETION = '/usr/share/bash-completion/completions/pve-ontap-snapshot'
BARE_IMPORT = 'import argparse, argcomplete'
# In one bash: the installed completion function as bash calls it on a <TAB> after
# `-storage O`, and the bare import with Debian's python3 (the launcher's), in turns.
IN_TURNS = r"""
source "$COMPLETION"
function=$(complete -p pve-ontap-snapshot | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
COMP_WORDS=(pve-ontap-snapshot -config "$CONFIG" storage list -storage O)
COMP_CWORD=6 COMP_LINE="${COMP_WORDS[*]}" COMP_TYPE=9
COMP_POINT=${#COMP_LINE}
for ((n = 0; n <= RUNS; n++)); do
    start=$EPOCHREALTIME; "$function" pve-ontap-snapshot O -storage; end=$EPOCHREALTIME
    echo "tab $n $start $end ${COMPREPLY[*]}"
    start=$EPOCHREALTIME; /usr/bin/python3 -c "$BARE_IMPORT"; end=$EPOCHREALTIME
    echo "bare $n $start $end"
done
"""


def installed_completion_seconds(config, runs=20):
    """Median wall times of a <TAB> through the installed completion and of the bare import,
    in turns (after one round not counted); None where the package is not installed."""
    if not os.path.exists(INSTALLED_COMPLETION):
        return None
    env = {k: v for k, v in os.environ.items() if not k.startswith('PYTHON') and k != 'VIRTUAL_ENV'}
    env.update(LC_ALL='C', COMPLETION=INSTALLED_COMPLETION, CONFIG=str(config), RUNS=str(runs),
               BARE_IMPORT=BARE_IMPORT)
    out = subprocess.run(['bash', '--norc', '--noprofile', '-c', IN_TURNS], env=env, capture_output=True, text=True,
                         check=True).stdout
    times = {'tab': [], 'bare': []}
    for line in out.splitlines():
        kind, n, start, end, *completions = line.split()
        if kind == 'tab' and 'ONTAP01' not in completions:
            raise SystemExit(f'the installed completion answered {completions}, not the storages of {config}')
        if n != '0':
            times[kind].append(float(end) - float(start))
    return statistics.median(times['tab']), statistics.median(times['bare'])


def print_completions(config):
    clone = completion_seconds(config)
    print(f'tab completion of -storage, whole process of the clone\'s script (median of 5): {clone * 1000:.0f} ms')
    installed = installed_completion_seconds(config)
    if installed is None:
        print('tab completion as installed: the Debian package is not installed (see README.md, Install)')
        return
    tab, bare = installed
    print(f'<TAB> on -storage through {INSTALLED_COMPLETION} (median of 20): {tab * 1000:.1f} ms')
    print(f"bare /usr/bin/python3 -c '{BARE_IMPORT}', in turns with it (median of 20): {bare * 1000:.1f} ms")
    print(f'<TAB> / bare import: {tab / bare:.2f} (target: at most 1.5)')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--latency', type=float, default=0.02, help='seconds added to every request (0.02)')
    parser.add_argument('--snapshots', type=int, default=1000, help='snapshots of the volume behind BENCH (1000)')
    parser.add_argument('--vms', type=int, help='instead: a cluster of this many VMs, and the scaling table')
    parser.add_argument('--parallel', type=int, help='with --vms: vm create -parallel N (default: the tool\'s)')
    parser.add_argument('--older', type=int, default=3,
                        help='with --vms: older snapshots of each VM before the runs (3: -keep 2 then deletes two)')
    parser.add_argument('--completion-only', action='store_true', help='time the tab completions alone')
    args = parser.parse_args(argv)
    if args.vms:
        return scale(args)
    directory = Path(tempfile.mkdtemp(prefix='pve-ontap-bench-'))
    if args.completion_only:
        (directory / 'config.ini').write_text('[proxmox]\n[ONTAP01]\n[ONTAP02]\n')
        print_completions(directory / 'config.ini')
        return 0
    # As on a PVE node, as the tests run: a directory of its own stands for /etc/pve/priv.
    tool.Node.CLUSTER_DIR = str(directory / 'priv')
    os.mkdir(tool.Node.CLUSTER_DIR)
    served = ServedPve(directory, time_scale=1.0)
    a, b = start_emulators(directory)
    try:
        populate(served.pve, a, b)
        world = World(served.pve, served.cafile, a, b, directory)
        add_bench_vms(world, args.snapshots)
        for emu in (a, b):
            emu.latency = args.latency
        served.pve.slow_network(args.latency)

        rows = []
        snapshot = 'proxmox_snapshot_2024-01-01_00:00:00+0000'
        plan = [
            ('vm create -vm 200 (running; 4 disks, 2 clusters)', ['vm', 'create', '-vm', 200], 18),
            ('vm create -vm 203 (stopped; same shape)', ['vm', 'create', '-vm', 203], 14),
            # Both shapes of the captures: three running VMs share one per volume, or, with a
            # mode, each VM takes its own inside its own pause.
            ('vm create -vm 200 201 202 (3 running, shared)', ['vm', 'create', '-vm', 200, 201, 202], None),
            ('vm create -vm 200 201 202 -pause (own captures)', ['vm', 'create', '-vm', 200, 201, 202, '-pause'],
             None),
            ('vm create -vm 201 -suspend', ['vm', 'create', '-vm', 201, '-suspend'], None),
            ('vm create -vm 202 -pause', ['vm', 'create', '-vm', 202, '-pause'], None),
            ('vm list -vm 200', ['vm', 'list', '-vm', 200], None),
            ('storage create (on a node: configs from pmxcfs)', ['storage', 'create', '-storage', 'ONTAP01'], 6),
            ('storage list', ['storage', 'list', '-storage', 'ONTAP01'], 4),
            (f'storage list ({args.snapshots} snapshots)', ['storage', 'list', '-storage', 'BENCH'], None),
            ('storage delete', ['storage', 'delete', '-storage', 'BENCH', '-snapshot', snapshot], 5),
            ('storage mount', ['storage', 'mount', '-storage', 'BENCH', '-snapshot',
                               'proxmox_snapshot_2024-01-01_00:00:01+0000'], None),
            ('storage unmount', ['storage', 'unmount', '-storage', 'BENCH-CLONE'], None),
        ]
        windows = {}
        for label, command, target in plan:
            # A run of a VM snapshotted in the same second waits for the next (one-second stamps):
            # each row begins in a second of its own, so that no row times that wait.
            time.sleep(1 - time.time() % 1)
            with PauseWindow() as pause, on_a_node(world, 'on a node' in label):
                ontap, pve, seconds, code = measure(world, command)
            for mode in ('-suspend', '-pause'):
                if mode in command:
                    windows[mode] = pause.seconds
            rows.append((label, ontap, pve, ontap + pve, target, seconds, code))
    finally:
        a.stop()
        b.stop()
        served.stop()

    print(f'latency {args.latency * 1000:.0f} ms per request on both sides\n')
    print(f'{"command":50} {"ONTAP":>5} {"PVE":>4} {"all":>4} {"target":>6} {"wall":>8}  exit')
    for label, ontap, pve, total, target, seconds, code in rows:
        print(f'{label:50} {ontap:5d} {pve:4d} {total:4d} {"≤" + str(target) if target else "":>6} '
              f'{seconds * 1000:6.0f} ms  {code}')
    print(f'\npause window of vm create -suspend (suspend done -> start issued): {windows["-suspend"] * 1000:.0f} ms')
    print(f'pause window of vm create -pause (suspend done -> resume issued): {windows["-pause"] * 1000:.0f} ms')
    print_completions(world.config)
    return 0 if all(row[-1] == 0 for row in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
