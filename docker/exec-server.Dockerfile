# The exec-server: its static binary plus a static busybox, so that the
# commands it runs have a shell and the usual tools.
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/busybox", "mkdir", "-p", "/tmp", "/var/lib/rex", "/keys"]
RUN ["/bin/busybox", "chmod", "1777", "/tmp"]
COPY exec-server /exec-server
ENV PATH=/bin
ENV REX_DATA_DIR=/var/lib/rex
ENTRYPOINT ["/exec-server"]
