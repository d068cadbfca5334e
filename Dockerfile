# cairn as a FROM scratch image: the static binaries and an empty data directory,
# nothing else (no shell, no libc, no base image to pull).
#
# The binaries are built on the host first; "make docker" does both steps:
#   CGO_ENABLED=0 GOOS=linux go build -o bin/image/cairn ./cmd/cairn
#   CGO_ENABLED=0 GOOS=linux go build -o bin/image/lockctl ./cmd/lockctl
#   docker build -t cairn:latest .
#
# lockctl is in the image for "docker run --entrypoint /lockctl cairn ...";
# its exec mode runs commands, and a scratch image has none but cairn, so
# exec is for images built FROM this one with the tools a job needs.
FROM scratch

# /data is owned by the unprivileged user so a fresh named volume mounted
# there inherits that ownership.
COPY --chown=65532:65532 bin/image/data /data
COPY bin/image/cairn /cairn
COPY bin/image/lockctl /lockctl

USER 65532:65532
# 7070 HTTP API, 7071 raft, 7072 gossip (TCP and UDP).
EXPOSE 7070 7071 7072 7072/udp
VOLUME ["/data"]
ENTRYPOINT ["/cairn"]
CMD ["--help"]
