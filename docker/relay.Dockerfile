# The relay: one static binary and nothing else. Built from the staging
# directory that scripts/compose-build.sh fills (no registry is needed).
FROM scratch
COPY relay /relay
USER 65534:65534
EXPOSE 7600
ENV REX_RELAY_LISTEN=0.0.0.0:7600
ENTRYPOINT ["/relay"]
