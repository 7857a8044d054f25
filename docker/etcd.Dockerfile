# etcd for the fleet of relays (docker-compose.fleet.yml): Debian's etcd
# and etcdctl with the C library they are linked against, nothing else.
# Built from the staging directory that scripts/compose-build.sh fills
# (no registry is needed).
FROM scratch
COPY etcd-root/ /
COPY --chown=65534:65534 etcd-data /var/lib/etcd
USER 65534:65534
EXPOSE 2379
ENTRYPOINT ["/usr/bin/etcd"]
