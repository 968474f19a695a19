# Sourced by scripts/test.sh: installs (once, under target/) and starts the object-store servers
# the tests run against, on loopback only, and exports their endpoints. They stop when the
# sourcing shell exits.
#   S3:    moto_server (PyPI moto[s3] 5.2.5) — accepts any static credentials
#   Azure: azurite-blob (npm azurite 3.35.0; 3.36+ needs a newer Node)
#   KMS:   the same moto_server (its KMS API), for [vault] kind = "aws-kms"
#   HSM:   SoftHSM2 (Debian softhsm2) for [vault] kind = "pkcs11", a fresh token under target/
venv=target/interop-venv
if ! "$venv/bin/python" -c "import cryptography, zstandard, moto, flask_cors, boto3, azure.storage.blob" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    cryptography zstandard "moto[s3]==5.2.5" flask flask-cors boto3 azure-storage-blob
fi
export QUIRE_PYTHON="$PWD/$venv/bin/python"

azurite_dir=target/azurite
if [ ! -x "$azurite_dir/node_modules/.bin/azurite-blob" ]; then
  mkdir -p "$azurite_dir"
  npm install --silent --no-audit --no-fund --prefix "$azurite_dir" azurite@3.35.0 >/dev/null
fi

free_port() { "$QUIRE_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
s3_port=$(free_port)
az_port=$(free_port)
store_tmp=$(mktemp -d)
"$QUIRE_PYTHON" -m moto.server -H 127.0.0.1 -p "$s3_port" > "$store_tmp/moto.log" 2>&1 &
moto_pid=$!
"$azurite_dir/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$az_port" \
  --location "$store_tmp/azurite" --silent --skipApiVersionCheck --disableTelemetry > "$store_tmp/azurite.log" 2>&1 &
azurite_pid=$!
stop_test_servers() {
  kill "$moto_pid" "$azurite_pid" 2>/dev/null || true
  wait "$moto_pid" "$azurite_pid" 2>/dev/null || true
  rm -rf "$store_tmp"
}
trap stop_test_servers EXIT

export QUIRE_TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"
export QUIRE_TEST_S3_BUCKET=quire-test
export QUIRE_TEST_KMS_ENDPOINT="http://127.0.0.1:$s3_port"
export QUIRE_TEST_AZURE_ENDPOINT="http://127.0.0.1:$az_port/devstoreaccount1"
export QUIRE_TEST_AZURE_CONTAINER=quire-test
# Never let any cloud SDK wander off to instance metadata or real endpoints.
export AWS_EC2_METADATA_DISABLED=true

if ! "$QUIRE_PYTHON" - <<'PY'
import os, time
import boto3
from azure.storage.blob import BlobServiceClient
deadline = time.time() + 60
while True:
    try:
        s3 = boto3.client("s3", endpoint_url=os.environ["QUIRE_TEST_S3_ENDPOINT"],
                          aws_access_key_id="quire-test", aws_secret_access_key="quire-test-secret",
                          region_name="eu-central-1")
        s3.create_bucket(Bucket=os.environ["QUIRE_TEST_S3_BUCKET"],
                         CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
        key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
        conn = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + key +
                ";BlobEndpoint=" + os.environ["QUIRE_TEST_AZURE_ENDPOINT"] + ";")
        BlobServiceClient.from_connection_string(conn).create_container(os.environ["QUIRE_TEST_AZURE_CONTAINER"])
        break
    except Exception as e:
        if time.time() > deadline:
            raise SystemExit(f"test object stores did not come up: {e}")
        time.sleep(0.5)
print("test object stores: S3 at", os.environ["QUIRE_TEST_S3_ENDPOINT"], "and Azure at", os.environ["QUIRE_TEST_AZURE_ENDPOINT"])
PY
then
  echo "--- moto's log:"; tail -n 20 "$store_tmp/moto.log"
  echo "--- azurite's log:"; tail -n 20 "$store_tmp/azurite.log"
  false
fi

# PKCS#11: SoftHSM2 with one token, initialised afresh on every run.
if [ ! -e /usr/lib/softhsm/libsofthsm2.so ]; then
  apt-get update -qq >/dev/null && apt-get install -y -qq softhsm2 >/dev/null
fi
hsm_dir="$PWD/target/softhsm"
rm -rf "$hsm_dir"
mkdir -p "$hsm_dir/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$hsm_dir/tokens" > "$hsm_dir/softhsm2.conf"
export SOFTHSM2_CONF="$hsm_dir/softhsm2.conf"
softhsm2-util --init-token --free --label quire-test --so-pin 12345678 --pin 87654321 >/dev/null
export QUIRE_TEST_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so
export QUIRE_TEST_PKCS11_TOKEN=quire-test
export QUIRE_TEST_PKCS11_PIN=87654321
echo "test HSM: SoftHSM2 token quire-test in $hsm_dir"

# PostgreSQL (Debian postgresql-15) for [meta] kind = "postgres": a fresh cluster on every run
# (scripts/postgres.sh). Tests connect over its socket as a trusted superuser (each makes a
# database of its own); over TCP every user needs a password.
source scripts/postgres.sh
start_postgres
trap 'stop_test_servers; stop_postgres' EXIT
export QUIRE_TEST_POSTGRES_URL="$QUIRE_PG_URL"
export QUIRE_TEST_POSTGRES_PORT="$QUIRE_PG_PORT"
export QUIRE_TEST_POSTGRES_CA="$QUIRE_PG_CA"
echo "test PostgreSQL: $QUIRE_PG_DIR (port $QUIRE_PG_PORT)"
