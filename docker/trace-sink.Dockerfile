# The trace sink that stands in for Jaeger where no registry can supply the
# real image: OTLP/gRPC on 4317, OTLP/HTTP on 4318, Jaeger's query API on
# 16686, health on 13133. A static busybox gives it the `wget` that the
# compose healthcheck uses (as the real Jaeger image has).
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY trace-sink /trace-sink
ENV PATH=/bin
EXPOSE 4317 4318 16686 13133
ENTRYPOINT ["/trace-sink"]
