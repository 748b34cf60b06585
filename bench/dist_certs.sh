#!/bin/sh
# The certificates of dist's TLS figures: a CA and one node certificate it
# signs (for 127.0.0.1, as an address and as a name), and an
# ssl_dist_optfile that verifies both ways, in DIR.
#   bench/dist_certs.sh DIR
set -e
cd "$1"
openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout node.key -out node.csr -subj /CN=bench-node 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' \
  > node.ext
openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
  -out node.pem -days 2 -extfile node.ext 2>/dev/null
dir=$(pwd)
cat > ssl_dist.conf <<CONF
[{server, [{certfile, "$dir/node.pem"}, {keyfile, "$dir/node.key"},
           {cacertfile, "$dir/ca.pem"}, {verify, verify_peer},
           {fail_if_no_peer_cert, true}]},
 {client, [{certfile, "$dir/node.pem"}, {keyfile, "$dir/node.key"},
           {cacertfile, "$dir/ca.pem"}, {verify, verify_peer}]}].
CONF
