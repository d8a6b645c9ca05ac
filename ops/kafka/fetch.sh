#!/usr/bin/env bash
# Fetches Apache Kafka's jars (org.apache.kafka:kafka_2.13 and its runtime
# dependencies, plus slf4j-simple) from Maven Central with ops/kafka/pom.xml,
# into ${SADA_KAFKA_HOME:-$HOME/.cache/sada-kafka/VERSION}/libs, and prints that
# directory on stdout; the tests read it from SADA_KAFKA_LIBS. Needs Java 17
# and Maven. Maven's local repository (~/.m2) caches the downloads.
#
# Idempotent: when the directory holds the jars of this very pom, it returns at
# once without running Maven. A new pom (another version) fetches again.
#
#   ops/kafka/fetch.sh            # fetch if needed, print the libs directory
#   export SADA_KAFKA_LIBS="$(ops/kafka/fetch.sh)"
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pom="$here/pom.xml"

version="$(sed -n 's:.*<kafka\.version>[[:space:]]*\([^<[:space:]]*\)[[:space:]]*</kafka\.version>.*:\1:p' "$pom" | head -n 1)"
if [[ -z "$version" ]]; then
  echo "fetch.sh: no <kafka.version> in $pom" >&2
  exit 1
fi

kafka_home="${SADA_KAFKA_HOME:-$HOME/.cache/sada-kafka/$version}"
libs="$kafka_home/libs"
stamp="$libs/.fetched-from-pom.sha256"
want="$(sha256sum "$pom" | cut -d' ' -f1)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && compgen -G "$libs/kafka_2.13-$version.jar" >/dev/null; then
  echo "$libs"
  exit 0
fi

for tool in java mvn; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "fetch.sh: $tool is needed to fetch Apache Kafka $version (Java 17 and Maven)" >&2
    exit 1
  fi
done

echo "fetch.sh: fetching Apache Kafka $version from Maven Central into $libs" >&2
mkdir -p "$kafka_home"
# Fill a fresh directory, then put it in place whole, so that an interrupted
# fetch never leaves a half-filled libs directory that looks complete.
staging="$(mktemp -d "$kafka_home/libs.partial.XXXXXX")"
chmod 755 "$staging"
trap 'rm -rf "$staging"' EXIT
mvn -B -q -f "$pom" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$staging" >&2
if ! compgen -G "$staging/kafka_2.13-$version.jar" >/dev/null; then
  echo "fetch.sh: Maven did not deliver kafka_2.13-$version.jar" >&2
  exit 1
fi
echo "$want" >"$staging/.fetched-from-pom.sha256"
rm -rf "$libs"
mv "$staging" "$libs"
trap - EXIT
echo "fetch.sh: $(find "$libs" -name '*.jar' | wc -l) jars in $libs" >&2
echo "$libs"
