"""The emulator's SnapMirror endpoints, read by NetApp's own client (netapp_ontap): a source
cluster lists the relationships of its volumes only with list_destinations_only, and holds a
relationship's policy only when the destination is within it."""

import pytest
from netapp_ontap import HostConnection
from netapp_ontap.error import NetAppRestError
from netapp_ontap.resources import SnapmirrorPolicy, SnapmirrorRelationship
from ontap_emulator import NEWEST_RELEASE, OLDEST_RELEASE, OntapEmulator

PASSWORD = 'netapp1!'


@pytest.fixture
def clusters(tmp_path, ontap_ca):
    """Cluster a with svm1/proxmox_storage01, the source; cluster b, the destination."""
    a = OntapEmulator(tmp_path / 'a', password=PASSWORD, cluster_name='cluster-a', ca=ontap_ca).start()
    b = OntapEmulator(tmp_path / 'b', password=PASSWORD, cluster_name='cluster-b', ca=ontap_ca).start()
    a.add_volume('proxmox_storage01')
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def conn(clusters, monkeypatch):
    # REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE would override the client's `verify` (ref pitfall 11).
    monkeypatch.delenv('REQUESTS_CA_BUNDLE', raising=False)
    monkeypatch.delenv('CURL_CA_BUNDLE', raising=False)
    a, _ = clusters
    with HostConnection('127.0.0.1', port=a.port, username='admin', password=PASSWORD, verify=a.cafile) as connection:
        yield connection


def destinations(path='svm1:proxmox_storage01'):
    return list(SnapmirrorRelationship.get_collection(list_destinations_only=True, **{'source.path': path},
                                                      fields='destination.path,policy.name,policy.uuid'))


def test_the_source_lists_its_volumes_relationships_only_as_destinations(clusters, conn):
    a, b = clusters
    vault = b.add_snapmirror_policy('XDPDefault', [('daily', 7), ('weekly', 52)])
    a.add_snapmirror('proxmox_storage01', 'svm_dr:proxmox_storage01_dst', vault)

    found = destinations()

    assert list(SnapmirrorRelationship.get_collection()) == []     # kept on the destination
    assert [(r.destination.path, r.policy.name, r.policy.uuid) for r in found] == [
        ('svm_dr:proxmox_storage01_dst', 'XDPDefault', vault['uuid'])]
    assert destinations('svm1:other_volume') == []


def test_a_policy_reads_with_its_rules_where_it_lives_and_is_unknown_elsewhere(clusters, conn):
    a, b = clusters
    here = a.add_snapmirror_policy('vault_here', [('daily', 14)])
    there = b.add_snapmirror_policy('XDPDefault', [('daily', 7)])

    policy = SnapmirrorPolicy(uuid=here['uuid'])
    policy.get(fields='name,type,retention,copy_all_source_snapshots')
    with pytest.raises(NetAppRestError) as unknown:
        SnapmirrorPolicy(uuid=there['uuid']).get(fields='name,retention')

    assert (policy.name, policy.type) == ('vault_here', 'async')
    assert [(rule.label, rule.count) for rule in policy.retention] == [('daily', '14')]
    assert not hasattr(policy, 'copy_all_source_snapshots')
    assert unknown.value.status_code == 404


@pytest.mark.parametrize('release', [OLDEST_RELEASE, '9.9.1', '9.10.1', NEWEST_RELEASE])
def test_a_mirror_of_every_snapshot_shows_as_its_release_knows(clusters, conn, release):
    a, _ = clusters
    a.release = release
    mirror = a.add_snapmirror_policy('MirrorAllSnapshots', copy_all_source_snapshots=True)
    policy = SnapmirrorPolicy(uuid=mirror['uuid'])

    if release in (OLDEST_RELEASE, '9.9.1'):
        with pytest.raises(NetAppRestError, match='"copy_all_source_snapshots" is invalid for field "fields"'):
            policy.get(fields='name,retention,copy_all_source_snapshots')
        policy.get(fields='name,retention')
        assert [(rule.label, rule.count) for rule in policy.retention] == [('all_source_snapshots', '1')]
    else:
        policy.get(fields='name,retention,copy_all_source_snapshots')
        assert policy.copy_all_source_snapshots is True and policy.retention == []


def test_the_source_may_leave_the_policy_unnamed(clusters, conn):
    a, b = clusters
    a.add_snapmirror('proxmox_storage01', 'svm_dr:dst', b.add_snapmirror_policy('XDPDefault', [('daily', 7)]))
    a.destinations_name_policy = False

    (found,) = destinations()

    assert found.destination.path == 'svm_dr:dst' and not hasattr(found, 'policy')
    assert a.release == NEWEST_RELEASE
