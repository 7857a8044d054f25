# The core-client CLI: one static binary. Its records live in /data.
FROM scratch
COPY core-client /core-client
ENV REX_DATA_DIR=/data
ENTRYPOINT ["/core-client"]
