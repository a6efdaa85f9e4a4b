"""What the Debian package is made of, checked from the clone (tests/test_installed_package.py
checks it installed): one version everywhere, a man page that says what --help says and what
each command does in detail, systemd units whose services snapshot a storage as configured and
write monitor's metrics, each in a sandbox, a failed run mailed to root with its journal lines,
and the lock directory made at boot, root's alone."""

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / 'pve_ontap_snapshot.py'
PACKAGING = ROOT / 'packaging'
SERVICE = PACKAGING / 'systemd' / 'pve-ontap-snapshot-storage@.service'
MONITOR = PACKAGING / 'systemd' / 'pve-ontap-snapshot-monitor.service'
MONITOR_TIMER = PACKAGING / 'systemd' / 'pve-ontap-snapshot-monitor.timer'
FAILURE = PACKAGING / 'systemd' / 'pve-ontap-snapshot-failure@.service'
MAIL_FAILURE = PACKAGING / 'mail-failure'
INSTALL = PACKAGING / 'debian' / 'pve-ontap-snapshot.install'
TEXTFILE = '/var/lib/prometheus/node-exporter'     # Debian's prometheus-node-exporter's textfile directory
TMPFILES = PACKAGING / 'debian' / 'pve-ontap-snapshot.tmpfiles'
LOCK_DIR = '/run/lock/pve-ontap-snapshot'
PROJECT = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']

sys.path.insert(0, str(PACKAGING))
import manpage
import metadata

import pve_ontap_snapshot as tool


def run(argv, **kwargs):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60, check=False, **kwargs)


# -- one version: pyproject.toml's

def test_version_in_a_clone_is_pyprojects():
    for flag in ('-version', '--version'):
        result = run([sys.executable, SCRIPT, flag])
        assert (result.returncode, result.stdout, result.stderr) == (0, f'pve-ontap-snapshot {PROJECT["version"]}\n', '')


def test_an_installed_module_reads_its_version_from_the_package_metadata(tmp_path):
    """As the Debian package installs it: the module in a site directory, no pyproject.toml
    beside it, the metadata its build writes from pyproject.toml."""
    shutil.copy(SCRIPT, tmp_path)
    metadata.write_dist_info(tmp_path, dict(PROJECT, version='9.9.9'))
    code = 'import sys; sys.path.insert(0, sys.argv[1]); import pve_ontap_snapshot as t; sys.exit(t.main(["-version"]))'

    result = run([sys.executable, '-c', code, tmp_path])

    assert (result.returncode, result.stdout) == (0, 'pve-ontap-snapshot 9.9.9\n')
    assert 'Version: 9.9.9' in (tmp_path / 'pve_ontap_snapshot-9.9.9.dist-info' / 'METADATA').read_text()


@pytest.mark.parametrize('python, debian', [('0.1.0', '0.1.0'), ('1.2rc1', '1.2~rc1'), ('2.0.0b3', '2.0.0~b3'),
                                            ('2.0.0.dev4', '2.0.0~dev4'), ('1.0.post1', '1.0.post1')])
def test_debian_orders_prereleases_before_their_release(python, debian):
    assert metadata.debian_version(python) == debian


# -- the man page

def leaf_commands(parser, words=()):
    for action in parser._actions:
        if isinstance(action.choices, dict):
            for name, child in action.choices.items():
                yield from leaf_commands(child, words + (name,))
            return
    yield ' '.join(words), parser


def test_the_man_page_names_every_command_option_and_example_of_help_and_the_version():
    page = manpage.manpage(tool)
    text = page.replace('\\-', '-').replace('\\e', '\\')

    assert f'"pve-ontap-snapshot {PROJECT["version"]}"' in text.splitlines()[1]
    commands = list(leaf_commands(tool.build_parser()))
    assert len(commands) == 26
    for words, command in commands:
        assert f'.SS "{words}"' in text
        section = text.split(f'.SS "{words}"')[1].split('.SS ')[0]
        for action in command._actions:
            for flag in action.option_strings:
                assert f'\\fB{flag}\\fR' in section or f'\\fB{flag}\\fR' in text.split('.SH COMMANDS')[0], flag
        for example in command.epilog.splitlines()[1:]:
            assert example.strip() in section


def man_text(page):
    """A man page's roff source with its escapes for `-`, `\\` and break points undone."""
    return page.replace('\\:', '').replace('\\-', '-').replace('\\e', '\\')


def test_the_man_page_says_what_help_cannot():
    """Beside the options: each command's behaviour in detail (what it changes, in which order,
    what it leaves when something fails), and the sections a man page has."""
    text = man_text(manpage.manpage(tool))
    sections = re.findall(r'^\.SH (.+)$', text, re.MULTILINE)

    assert sections[sections.index('COMMANDS') + 1:] == ['LOCKS', 'UNCLEAR ANSWERS', 'RUNS', 'CONFIGURATION', 'NAMES ON THE STORAGE',
                                                         'EXIT STATUS', 'ENVIRONMENT', 'SECURITY', 'FILES', 'SEE ALSO']
    assert set(manpage.BEHAVIOUR) == {words for words, _ in leaf_commands(tool.build_parser())}
    restore = text.split('.SS "vm restore"')[1].split('.SS ')[0]
    assert 'the current disks are cloned to a pre-restore snapshot' in restore
    assert 'All or nothing: if one disk fails, those overwritten are put back' in restore
    assert r'\fB-with-config\fR sets every key of the saved config' in restore     # an option, in bold
    # Every variable of the tool's own that it reads is explained.
    environment = text.split('.SH ENVIRONMENT')[1].split('.SH ')[0]
    read = set(re.findall(r"os\.environ(?:\.get\(|\[)'(PVE_ONTAP_SNAPSHOT_\w+)'", SCRIPT.read_text()))
    assert read and all(name in environment for name in read), read


@pytest.mark.skipif(not shutil.which('groff'), reason='groff renders man pages (Debian: groff-base)')
@pytest.mark.parametrize('width', ['78n', '70n'])     # man's for 80 columns (lintian's), and a narrower one
def test_the_man_page_renders_without_a_warning(tmp_path, width):
    path = tmp_path / 'pve-ontap-snapshot.8'
    path.write_text(manpage.manpage(tool))
    result = run(['groff', '-man', '-Tutf8', '-ww', '-z', f'-rLL={width}', path])
    assert (result.returncode, result.stderr) == (0, '')


# -- the systemd units

def unit_command(unit, instance, env_dir):
    """The command systemd runs for the unit's ExecStart= as `instance`: %i replaced, the
    variables of Environment= and then of each EnvironmentFile= (later ones win,
    systemd.exec(5)), found here in env_dir under the same name; ${VAR} as one word, $VAR
    alone as words split at blanks (systemd.service(5), "Command lines")."""
    settings = [line.partition('=')[::2] for line in unit.replace('%i', instance).splitlines() if '=' in line]
    env, exec_start = {}, None
    for key, value in settings:
        if key == 'Environment':
            env.update(item.split('=', 1) for item in shlex.split(value))
        elif key == 'EnvironmentFile':
            path = Path(env_dir) / Path(value.lstrip('-')).name
            if path.exists():
                env.update(line.split('=', 1) for line in path.read_text().splitlines()
                           if line.strip() and not line.startswith('#'))
        elif key == 'ExecStart':
            exec_start = value
    argv = []
    for word in shlex.split(exec_start):
        alone = re.fullmatch(r'\$(\w+)', word)
        if alone:
            argv += env.get(alone[1], '').split()
        else:
            argv.append(re.sub(r'\$\{(\w+)\}', lambda found: env.get(found[1], ''), word))
    return argv


def run_unit(world, command, unit):
    """The service's command as systemd would run it for ONTAP01, with the world's config."""
    argv = unit_command(unit, 'ONTAP01', world.dir)
    assert argv[0] == '/usr/sbin/pve-ontap-snapshot'
    return run(command + argv[1:] + ['-config', world.config])


def snapshot_labels(world):
    return sorted(str(s.snapmirror_label) for s in world.vol1.snapshots.values())


def check_the_timers_service(world, command, unit):
    """The story of the timer's service, run by `command` (the tool's argv) from `unit`."""
    assert 'EnvironmentFile=-/etc/pve-ontap-snapshot/%i.env' in unit     # where README.md says

    first = run_unit(world, command, unit)
    second = run_unit(world, command, unit)

    assert (first.returncode, first.stdout, first.stderr) == (0, '', '')     # silent: -loglevel warn
    assert second.returncode == 0, second.stderr
    assert snapshot_labels(world) == ['None']       # MIN_AGE: one a night, whichever node fires first

    (world.dir / 'ONTAP01.env').write_text('# weekly ones, the newest 2\nKEEP=2\nMIN_AGE=0\nOPTIONS=-label weekly\n')
    for _ in range(3):
        result = run_unit(world, command, unit)
        assert result.returncode == 0, result.stderr
    assert snapshot_labels(world) == ['None', 'weekly', 'weekly']


def test_the_timers_service_snapshots_its_storage_once_a_night_as_its_environment_says(world):
    check_the_timers_service(world, [sys.executable, SCRIPT], SERVICE.read_text())


def check_the_monitor_service(world, command, unit, textfile):
    """The story of the monitor's service, run by `command` (the tool's argv) from `unit`: every
    hour it writes both metrics files into the textfile directory, whatever monitor's verdict,
    which the unit takes for a success (SuccessExitStatus=)."""
    settings = unit_settings(unit)
    succeeds = {0} | {int(code) for code in settings['SuccessExitStatus'][0].split()}
    assert 'EnvironmentFile=-/etc/pve-ontap-snapshot/monitor.env' in unit     # where README.md says
    argv = unit_command(unit, '', world.dir)
    assert argv[0] == '/usr/sbin/pve-ontap-snapshot' and argv[-2:] == ['-textfile', TEXTFILE]
    argv[-1] = str(textfile)

    nothing_yet = run(command + argv[1:] + ['-config', world.config])
    assert world.run('storage', 'create', '-storage', 'ONTAP01').code == 0
    assert world.run('storage', 'create', '-storage', 'ONTAP02').code == 0
    (world.dir / 'monitor.env').write_text('OPTIONS=-storage ONTAP01 -warn 1h\n')
    fresh = run(command + unit_command(unit, '', world.dir)[1:-1] + [textfile, '-config', world.config])

    assert nothing_yet.returncode == 2 and nothing_yet.returncode in succeeds      # CRITICAL: no snapshot yet
    assert (fresh.returncode, fresh.stderr) == (0, ''), fresh.stdout + fresh.stderr
    assert fresh.stdout.startswith('OK: 1 storage(s) and 0 VM(s) fresh')      # OPTIONS of monitor.env
    assert sorted(p.name for p in textfile.iterdir()) == ['pve_ontap_snapshot.prom', 'pve_ontap_snapshot_runs.prom']
    assert 'pve_ontap_snapshot_check_state{kind="storage",name="ONTAP01",label=""} 0' in (
        textfile / 'pve_ontap_snapshot.prom').read_text()


def test_the_monitor_service_writes_the_metrics_whatever_the_verdict(world, tmp_path):
    textfile = tmp_path / 'node-exporter'
    textfile.mkdir(mode=0o755)
    check_the_monitor_service(world, [sys.executable, SCRIPT], MONITOR.read_text(), textfile)


def test_the_monitor_timer_fires_hourly_and_its_service_only_where_node_exporter_reads_the_directory():
    timer, service = unit_settings(MONITOR_TIMER.read_text()), unit_settings(MONITOR.read_text())
    assert (timer['OnCalendar'], timer['WantedBy']) == (['*-*-* *:15:00'], ['timers.target'])
    assert service['ConditionPathIsDirectory'] == [TEXTFILE]
    assert service['Environment'] == [f'TEXTFILE={TEXTFILE} OPTIONS=']
    assert service['ExecStart'] == ['/usr/sbin/pve-ontap-snapshot -loglevel warn monitor $OPTIONS -textfile ${TEXTFILE}']
    assert (service['Type'], service['SuccessExitStatus'], service['StandardOutput']) == (['oneshot'], ['1 2 3'],
                                                                                         ['null'])


# -- the service's sandbox

def unit_settings(text):
    """{key: [values]} of a unit file's settings, in order (comments and sections left out)."""
    settings = {}
    for line in text.splitlines():
        if '=' in line and not line.startswith(('#', ';', '[')):
            key, value = line.split('=', 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


SANDBOX_YES = ('ProtectHome', 'PrivateTmp', 'PrivateDevices', 'ProtectKernelTunables', 'ProtectKernelModules',
               'ProtectKernelLogs', 'ProtectControlGroups', 'ProtectClock', 'ProtectHostname', 'NoNewPrivileges',
               'RestrictSUIDSGID', 'LockPersonality', 'RestrictRealtime', 'RestrictNamespaces')


def test_the_service_runs_in_a_sandbox_that_leaves_it_what_it_writes():
    settings = unit_settings(SERVICE.read_text())
    one = {key: values[-1] for key, values in settings.items()}

    # Read-only but for what it writes: the cluster-wide lock and records in /etc/pve, the
    # node-local lock directory; "-", so that the unit starts where one is missing.
    assert one['ProtectSystem'] == 'strict'
    assert one['ReadWritePaths'].split() == ['-/etc/pve', f'-{LOCK_DIR}']
    assert {key: one.get(key) for key in SANDBOX_YES} == dict.fromkeys(SANDBOX_YES, 'yes')
    assert (one['ProtectProc'], one['ProcSubset'], one['UMask']) == ('invisible', 'pid', '0077')
    assert one['SystemCallArchitectures'] == 'native'
    assert settings['SystemCallFilter'] == ['@system-service', '~@privileged']
    assert one['SystemCallErrorNumber'] == 'EPERM'      # a refused call fails as an error, never kills
    assert set(one['RestrictAddressFamilies'].split()) == {'AF_UNIX', 'AF_INET', 'AF_INET6', 'AF_NETLINK'}
    # Root's rights over files, none else; nothing may undo the bounding set.
    assert set(one['CapabilityBoundingSet'].split()) == {'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER'}
    assert 'AmbientCapabilities' not in settings
    # ctypes and libffi may need memory both written and run.
    assert 'MemoryDenyWriteExecute' not in settings


def test_the_sandbox_keeps_what_the_service_runs():
    """The sandbox is added below the service's own settings, which stay as they were."""
    settings = unit_settings(SERVICE.read_text())
    assert settings['Type'] == ['oneshot']
    assert settings['Environment'] == ['KEEP=7 MIN_AGE=12h OPTIONS=']
    assert settings['EnvironmentFile'] == ['-/etc/pve-ontap-snapshot/%i.env']
    command = '/usr/sbin/pve-ontap-snapshot -loglevel warn -wait 600 storage create -storage %i -keep ${KEEP} ' \
              '-min-age ${MIN_AGE} $OPTIONS'
    assert settings['ExecStart'] == [command]
    # As root (pmxcfs is root's), on the host's network (PVE's API, ONTAP anywhere).
    assert not {'User', 'DynamicUser', 'PrivateUsers', 'PrivateNetwork', 'IPAddressDeny'} & set(settings)


def exposure_threshold():
    """The most systemd-analyze security may score the service in .ci/run, in tenths."""
    (found,) = re.findall(r'^exposure_threshold=(\d+)$', (ROOT / '.ci' / 'run').read_text(), re.MULTILINE)
    return int(found)


def exposure(unit_text, tmp_path, name='pve-ontap-snapshot-storage@CI.service'):
    """systemd-analyze security --offline's score of a unit file (a template's as an instance,
    `name`), in tenths, and whether it is at most exposure_threshold()."""
    path = tmp_path / name
    path.write_text(unit_text)
    result = run(['systemd-analyze', 'security', '--offline=yes', f'--threshold={exposure_threshold()}', path])
    if 'offline' in result.stderr and 'unrecognized' in result.stderr:
        pytest.skip('systemd-analyze security --offline needs systemd 250 or newer')
    (score,) = re.findall(r'Overall exposure level for \S+: (\d+)\.(\d)', result.stdout)
    return int(''.join(score)), result.returncode == 0


@pytest.mark.skipif(not shutil.which('systemd-analyze'), reason='systemd-analyze scores the sandbox (Debian: systemd)')
def test_the_service_scores_at_most_the_threshold_and_would_not_without_its_sandbox(tmp_path):
    text = SERVICE.read_text()
    unsandboxed = text.split('\n\n# The sandbox')[0] + '\n'     # the unit as it was before

    score, within = exposure(text, tmp_path)
    score_unsandboxed, within_unsandboxed = exposure(unsandboxed, tmp_path)

    assert (within, score <= exposure_threshold()) == (True, True), score
    assert (within_unsandboxed, score_unsandboxed > exposure_threshold()) == (False, True), score_unsandboxed


# The units .ci/run scores, as it names them: the monitor's, and the failure unit as the storage
# service's OnFailure= starts it.
SCORED = {'pve-ontap-snapshot-monitor.service': MONITOR,
          'pve-ontap-snapshot-failure@pve-ontap-snapshot-storage@CI.service.service': FAILURE}


@pytest.mark.skipif(not shutil.which('systemd-analyze'), reason='systemd-analyze scores the sandbox (Debian: systemd)')
@pytest.mark.parametrize('name', sorted(SCORED))
def test_the_other_services_score_at_most_the_same_threshold(tmp_path, name):
    score, within = exposure(SCORED[name].read_text(), tmp_path, name)
    assert (within, score <= exposure_threshold()) == (True, True), score
    assert name in (ROOT / '.ci' / 'run').read_text()     # and .ci/run scores it so, on Debian 12 and 13


def sandbox_of(path):
    """The settings below a unit's `# The sandbox` comment: {key: [values]}."""
    return unit_settings(path.read_text().split('\n# The sandbox')[1])


def test_the_monitor_service_has_the_storage_services_sandbox_but_for_where_it_writes():
    storage, monitor = sandbox_of(SERVICE), sandbox_of(MONITOR)
    assert monitor.pop('ReadWritePaths') == [f'-{TEXTFILE}']
    storage.pop('ReadWritePaths')
    assert monitor == storage


def test_the_failure_unit_has_the_storage_services_sandbox_but_for_what_sendmail_needs():
    """Postfix's sendmail hands the mail to postdrop, set-group-id postdrop, which writes it into
    the maildrop directory and wakes pickup through a FIFO: no NoNewPrivileges= (it would take that
    group), that directory writable, Unix sockets only; nothing else is loosened."""
    storage, failure = sandbox_of(SERVICE), sandbox_of(FAILURE)
    assert failure.pop('ReadWritePaths') == ['-/var/spool/postfix/maildrop']
    assert 'NoNewPrivileges' not in failure and storage.pop('NoNewPrivileges') == ['yes']
    # Tighter than the storage service where it can be: no network, no memory both written and run.
    assert failure.pop('RestrictAddressFamilies') == ['AF_UNIX'] and failure.pop('MemoryDenyWriteExecute') == ['yes']
    # journalctl and systemctl read the boot id in /proc/sys.
    assert storage.pop('ProcSubset') == ['pid']
    for key in ('ReadWritePaths', 'RestrictAddressFamilies'):
        storage.pop(key)
    assert failure == storage


def test_each_service_mails_its_failure_through_the_failure_unit_that_runs_the_packages_script():
    for service in (SERVICE, MONITOR):
        assert unit_settings(service.read_text())['OnFailure'] == ['pve-ontap-snapshot-failure@%n.service']
    settings = unit_settings(FAILURE.read_text())
    assert (settings['Type'], settings['ExecStart']) == (['oneshot'], ['/usr/libexec/pve-ontap-snapshot/mail-failure %i'])
    assert 'OnFailure' not in settings      # no failure mails of its own failure
    installed = [line.split() for line in INSTALL.read_text().splitlines() if line and not line.startswith('#')]
    assert ['packaging/mail-failure', 'usr/libexec/pve-ontap-snapshot/'] in installed
    assert {f'packaging/systemd/{path.name}' for path in (PACKAGING / 'systemd').iterdir()} == {
        source for source, target in installed if target == 'usr/lib/systemd/system/'}
    assert MAIL_FAILURE.stat().st_mode & 0o111 and MAIL_FAILURE.read_text().startswith('#!/bin/sh\n')


# -- the failure mail

class MailWorld:
    """mail-failure with fakes of the programs it runs, as absolute paths in its first lines:
    journalctl (the journal of one run), systemctl (a failed unit and its last invocation),
    sendmail (keeps the mail and its arguments). `script` is the script run in their place
    (tests/test_installed_package.py binds the fakes over the node's own programs instead)."""

    INVOCATION = '0123456789abcdef0123456789abcdef'
    UNIT = 'pve-ontap-snapshot-storage@ONTAP01.service'
    JOURNAL = ('2026-03-13T03:00:00+0000 pve1 systemd[1]: Starting pve-ontap-snapshot-storage@ONTAP01.service...',
               '2026-03-13T03:00:03+0000 pve1 pve-ontap-snapshot[4242]: ERROR: ONTAP01: cluster-a is unreachable')

    def __init__(self, directory):
        self.dir = directory
        directory.mkdir(exist_ok=True)
        self.calls, self.mail = directory / 'calls', directory / 'mail'
        journal = ''.join(f"echo '{line}'\n" for line in self.JOURNAL)
        self.write('journalctl', f'echo "journalctl $*" >> {self.calls}\ncase "$*" in\n'
                                 f'  *_SYSTEMD_INVOCATION_ID=*) {journal.strip()};;\n'
                                 f"  *) echo '2026-03-12T03:00:00+0000 pve1 pve-ontap-snapshot[1]: an older run';;\n"
                                 'esac\n')
        self.write('systemctl', f'echo "systemctl $*" >> {self.calls}\ncase "$1" in\n'
                                f'  show) cat {directory}/invocation 2>/dev/null;;\n'
                                '  status) echo "x $6 - ONTAP snapshot of PVE storage ONTAP01"\n'
                                '          echo "     Active: failed (Result: exit-code)"; exit 3;;\n'
                                'esac\n')
        self.write('sendmail', f'echo "sendmail $*" >> {self.calls}\ncat > {self.mail}\n')
        (directory / 'invocation').write_text(self.INVOCATION + '\n')

    def write(self, name, body):
        path = self.dir / name
        path.write_text('#!/bin/sh\n' + body)
        path.chmod(0o755)

    def script(self, text):
        """The script with its programs replaced by the fakes."""
        programs = dict(re.findall(r'^(journalctl|systemctl|sendmail)=(/\S+)$', text, re.MULTILINE))
        assert programs == {'journalctl': '/usr/bin/journalctl', 'systemctl': '/usr/bin/systemctl',
                            'sendmail': '/usr/sbin/sendmail'}
        path = self.dir / 'mail-failure'
        path.write_text(re.sub(r'^(journalctl|systemctl|sendmail)=/\S+$', lambda found: f'{found[1]}={self.dir / found[1]}',
                               text, flags=re.MULTILINE))
        path.chmod(0o755)
        return path

    def called(self):
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def headers_and_body(self):
        head, _, body = self.mail.read_text().partition('\n\n')
        return dict(line.split(': ', 1) for line in head.splitlines()), body


def check_the_failure_mail(mail, result, monitor=True):
    """mail-failure's mail of MailWorld.UNIT's failed run: to root, the unit and the host in its
    subject, its status and the journal lines of that run in its body."""
    assert (result.returncode, result.stderr) == (0, '')
    headers, body = mail.headers_and_body()
    host = os.uname().nodename
    assert headers['To'] == 'root' and headers['Subject'] == f'{mail.UNIT} failed on {host}'
    assert headers['Auto-Submitted'] == 'auto-generated'
    assert body.startswith(f'{mail.UNIT} failed on {host}' + (' (result: exit-code, exited 1).' if monitor else '.'))
    assert f'x {mail.UNIT} - ONTAP snapshot of PVE storage ONTAP01\n     Active: failed (Result: exit-code)' in body
    assert body.rstrip('\n').endswith('\n'.join(mail.JOURNAL))
    assert [line for line in mail.called() if line.startswith('sendmail')] == ['sendmail -t -oi']
    assert f'journalctl --no-pager --output=short-iso --lines=200 _SYSTEMD_INVOCATION_ID={mail.INVOCATION} + ' \
           f'OBJECT_SYSTEMD_INVOCATION_ID={mail.INVOCATION} + INVOCATION_ID={mail.INVOCATION}' in mail.called()


def as_on_failure():
    """The environment systemd gives a unit that OnFailure= started (systemd.exec(5), $MONITOR_*)."""
    return dict(os.environ, MONITOR_UNIT=MailWorld.UNIT, MONITOR_INVOCATION_ID=MailWorld.INVOCATION,
                MONITOR_SERVICE_RESULT='exit-code', MONITOR_EXIT_CODE='exited', MONITOR_EXIT_STATUS='1')


def test_a_failed_run_is_mailed_to_root_with_the_journal_lines_of_that_run(tmp_path):
    mail = MailWorld(tmp_path / 'mail')
    (mail.dir / 'invocation').write_text('')     # systemd no longer has it: the one it passed is used
    result = run([mail.script(MAIL_FAILURE.read_text()), mail.UNIT], env=as_on_failure())
    check_the_failure_mail(mail, result)
    assert not [line for line in mail.called() if line.startswith('systemctl show')]


def test_started_by_hand_it_asks_systemd_for_the_units_last_run_else_takes_its_last_lines(tmp_path):
    mail = MailWorld(tmp_path / 'mail')
    script = mail.script(MAIL_FAILURE.read_text())

    asked = run([script, mail.UNIT])
    check_the_failure_mail(mail, asked, monitor=False)
    assert f'systemctl show --property=InvocationID --value -- {mail.UNIT}' in mail.called()

    (mail.dir / 'invocation').write_text('not-an-id; rm -rf /\n')     # never put on journalctl's command line
    before = len(mail.called())
    last_lines = run([script, mail.UNIT])
    assert last_lines.returncode == 0
    # sendmail reads the mail through a pipe, so it may start before the journal is asked: in any order.
    journal = [call for call in mail.called()[before:] if call.startswith('journalctl')]
    assert journal == [f'journalctl --no-pager --output=short-iso --lines=50 --unit={mail.UNIT}']
    assert mail.headers_and_body()[1].rstrip('\n').endswith('an older run')


def test_without_sendmail_it_fails_with_one_line_and_sends_nothing(tmp_path):
    mail = MailWorld(tmp_path / 'mail')
    script = mail.script(MAIL_FAILURE.read_text())
    (mail.dir / 'sendmail').unlink()

    result = run([script, mail.UNIT], env=as_on_failure())

    assert result.returncode == 1 and result.stderr.count('\n') == 1
    assert result.stderr.startswith(f'no {mail.dir / "sendmail"}: the failure of {mail.UNIT} on ')
    assert not mail.mail.exists() and mail.called() == []


def test_a_sendmail_that_fails_fails_the_unit_saying_so(tmp_path):
    mail = MailWorld(tmp_path / 'mail')
    mail.write('sendmail', 'cat > /dev/null\necho "sendmail: fatal: no queue" >&2\nexit 75\n')
    result = run([mail.script(MAIL_FAILURE.read_text()), mail.UNIT], env=as_on_failure())
    assert result.returncode == 1
    assert result.stderr.endswith(f'{mail.dir / "sendmail"} -t failed (exit 75): the failure of {mail.UNIT} on '
                                  f'{os.uname().nodename} is not mailed to root\n')


# -- the lock directory

def test_tmpfiles_makes_the_lock_directory_roots_alone_at_boot():
    lines = [line.split() for line in TMPFILES.read_text().splitlines() if line.strip() and not line.startswith('#')]
    assert lines == [['d', LOCK_DIR, '0700', 'root', 'root', '-']]


def test_the_lock_directory_is_the_one_the_command_and_the_readme_name():
    assert f"'{LOCK_DIR}'" in SCRIPT.read_text()
    assert f'`{LOCK_DIR}/' in (ROOT / 'README.md').read_text()
