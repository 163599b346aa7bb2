#!/usr/bin/env bash
# Flink for Beam's FlinkRunner: the Beam Flink job-server jar (cached) and a standalone Flink
# session cluster (JobManager + one TaskManager with 2 slots, separate JVMs, loopback only).
#
#   bash scripts/services/flink.sh         # fetch/build if missing, start if down, wait, print env lines
#   bash scripts/services/flink.sh stop    # stop the cluster started here
#
# Prints:
#   BEAM_ETL_TEST_FLINK_MASTER=localhost:8081
#   BEAM_ETL_FLINK_JOB_SERVER_JAR=/root/.cache/beam-etl/flink/beam-runners-flink-1.19-job-server-<v>.jar
#   BEAM_ETL_FLINK_VERSION=1.19
#
# Why Flink 1.19 and an assembled job server: Maven Central as served here has no
# beam-runners-flink-*-job-server artifact at all, and of Beam's Flink runner modules only
# org.apache.beam:beam-runners-flink-1.19 (2.62.0, 2.70.0) with a complete dependency set at
# 2.62.0. So, unless the official beam-runners-flink-1.19-job-server:<python beam version> jar
# can be fetched, this script builds the same shaded jar Beam publishes (main class
# FlinkJobServerDriver, service files merged) from beam-runners-flink-1.19:2.62.0 with the
# maven-shade-plugin. The cluster runs Flink 1.19.0, the exact Flink the runner is compiled
# against; flink-dist is not on Maven Central, so the cluster classpath is flink-runtime,
# flink-streaming-java, flink-java, flink-clients and log4j, which is all the two entrypoints need.
# Everything is cached under ~/.cache/beam-etl/flink (jars ~220 MB) and ~/.m2.
source "$(dirname "$0")/_lib.sh"

FLINK_MINOR=1.19
FLINK_VERSION=1.19.0           # what beam-runners-flink-1.19 is compiled against
ASSEMBLED_BEAM_VERSION=2.62.0  # newest Beam whose Flink runner resolves completely from Maven Central here
REST_PORT=8081
FLINK_CACHE=$BEAM_ETL_CACHE/flink
FLINK_HOME=$FLINK_CACHE/flink-$FLINK_VERSION
MANIFEST=$FLINK_CACHE/job-server.env
BEAM_PY_VERSION=$("${PYTHON:-python}" -c 'from importlib.metadata import version; print(version("apache-beam"))' 2>/dev/null || echo 2.77.0)
mkdir -p "$FLINK_CACHE"

if [ "${1:-}" = "stop" ]; then
  stop_daemon flink-taskmanager
  stop_daemon flink-jobmanager
  echo "Flink cluster stopped"
  exit 0
fi

# --- 1. the job-server jar -------------------------------------------------------------------
official=$FLINK_CACHE/beam-runners-flink-$FLINK_MINOR-job-server-$BEAM_PY_VERSION.jar
assembled=$FLINK_CACHE/beam-runners-flink-$FLINK_MINOR-job-server-$ASSEMBLED_BEAM_VERSION.jar
build_assembled_job_server() {
  local dir=$FLINK_CACHE/job-server-build
  mkdir -p "$dir"
  cat > "$dir/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>beam-etl</groupId><artifactId>flink-job-server</artifactId><version>1</version>
  <properties><project.build.sourceEncoding>UTF-8</project.build.sourceEncoding></properties>
  <dependencies>
    <dependency><groupId>org.apache.beam</groupId><artifactId>beam-runners-flink-$FLINK_MINOR</artifactId><version>$ASSEMBLED_BEAM_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>1.7.30</version></dependency>
  </dependencies>
  <build><plugins><plugin>
    <groupId>org.apache.maven.plugins</groupId><artifactId>maven-shade-plugin</artifactId><version>3.6.0</version>
    <executions><execution><phase>package</phase><goals><goal>shade</goal></goals><configuration>
      <finalName>job-server</finalName>
      <createDependencyReducedPom>false</createDependencyReducedPom>
      <filters><filter><artifact>*:*</artifact><excludes>
        <exclude>META-INF/*.SF</exclude><exclude>META-INF/*.DSA</exclude><exclude>META-INF/*.RSA</exclude>
        <exclude>module-info.class</exclude>
      </excludes></filter></filters>
      <transformers>
        <transformer implementation="org.apache.maven.plugins.shade.resource.ServicesResourceTransformer"/>
        <transformer implementation="org.apache.maven.plugins.shade.resource.ManifestResourceTransformer">
          <mainClass>org.apache.beam.runners.flink.FlinkJobServerDriver</mainClass>
        </transformer>
      </transformers>
    </configuration></execution></executions>
  </plugin></plugins></build>
</project>
POM
  (cd "$dir" && mvn_quiet package)
  mv "$dir/target/job-server.jar" "$assembled.tmp" && mv "$assembled.tmp" "$assembled"
  rm -rf "$dir/target"
}

if [ -f "$official" ]; then
  JOB_SERVER_JAR=$official; JOB_SERVER_BEAM_VERSION=$BEAM_PY_VERSION
elif [ -f "$assembled" ]; then
  JOB_SERVER_JAR=$assembled; JOB_SERVER_BEAM_VERSION=$ASSEMBLED_BEAM_VERSION
elif mvn -q -B dependency:copy -Dmdep.overWriteIfNewer=false \
    "-Dartifact=org.apache.beam:beam-runners-flink-$FLINK_MINOR-job-server:$BEAM_PY_VERSION" \
    "-DoutputDirectory=$FLINK_CACHE" >/dev/null 2>&1 && [ -f "$official" ]; then
  JOB_SERVER_JAR=$official; JOB_SERVER_BEAM_VERSION=$BEAM_PY_VERSION
else
  echo "flink.sh: beam-runners-flink-$FLINK_MINOR-job-server:$BEAM_PY_VERSION is not on Maven Central here;" \
       "building the job server from beam-runners-flink-$FLINK_MINOR:$ASSEMBLED_BEAM_VERSION (once, ~1 min)" >&2
  build_assembled_job_server
  JOB_SERVER_JAR=$assembled; JOB_SERVER_BEAM_VERSION=$ASSEMBLED_BEAM_VERSION
fi

# Beam's Python FlinkRunner looks here before downloading (DESIGN §9): with the link in place
# `--runner=FlinkRunner --flink_version=1.19` works offline even without beam_etl's defaults.
BEAM_JAR_CACHE=$HOME/.apache_beam/cache/jars
mkdir -p "$BEAM_JAR_CACHE"
beam_name=$BEAM_JAR_CACHE/beam-runners-flink-$FLINK_MINOR-job-server-$BEAM_PY_VERSION.jar
if [ ! -e "$beam_name" ] || [ -L "$beam_name" ]; then
  ln -sfn "$JOB_SERVER_JAR" "$beam_name"
fi

# beam_etl.runners.flink reads this to default --flink_job_server_jar and --flink_version.
cat > "$MANIFEST.tmp" <<ENV
BEAM_ETL_FLINK_VERSION=$FLINK_MINOR
BEAM_ETL_FLINK_JOB_SERVER_JAR=$JOB_SERVER_JAR
BEAM_ETL_FLINK_JOB_SERVER_BEAM_VERSION=$JOB_SERVER_BEAM_VERSION
ENV
mv "$MANIFEST.tmp" "$MANIFEST"

# --- 2. the Flink cluster classpath ----------------------------------------------------------
if [ ! -f "$FLINK_HOME/lib/.complete" ]; then
  mkdir -p "$FLINK_HOME/lib"
  cat > "$FLINK_HOME/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>beam-etl</groupId><artifactId>flink-cluster</artifactId><version>1</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.flink</groupId><artifactId>flink-runtime</artifactId><version>$FLINK_VERSION</version></dependency>
    <dependency><groupId>org.apache.flink</groupId><artifactId>flink-streaming-java</artifactId><version>$FLINK_VERSION</version></dependency>
    <dependency><groupId>org.apache.flink</groupId><artifactId>flink-java</artifactId><version>$FLINK_VERSION</version></dependency>
    <dependency><groupId>org.apache.flink</groupId><artifactId>flink-clients</artifactId><version>$FLINK_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.17.1</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.17.1</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-1.2-api</artifactId><version>2.17.1</version></dependency>
  </dependencies>
</project>
POM
  (cd "$FLINK_HOME" && mvn_quiet dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime)
  touch "$FLINK_HOME/lib/.complete"
fi

# --- 3. configuration (rewritten every run: cheap, and keeps it in step with this script) ----
mkdir -p "$FLINK_HOME/conf" "$FLINK_HOME/log"
cat > "$FLINK_HOME/conf/config.yaml" <<YAML
# Generated by scripts/services/flink.sh: a loopback-only session cluster for tests.
jobmanager.rpc.address: localhost
jobmanager.rpc.port: 6123
jobmanager.bind-host: localhost
jobmanager.memory.process.size: 1024m
taskmanager.host: localhost
taskmanager.bind-host: localhost
taskmanager.numberOfTaskSlots: 2
taskmanager.memory.process.size: 3072m
# Beam's shuffles (joins, aggregates, window functions over hash shards) open many channels at
# parallelism 2; Flink's default network share (10%) ran out of buffers for a join + aggregate job.
taskmanager.memory.network.fraction: 0.25
taskmanager.memory.network.min: 512m
taskmanager.memory.network.max: 1024m
parallelism.default: 1
rest.address: localhost
rest.bind-address: localhost
rest.port: $REST_PORT
io.tmp.dirs: $FLINK_HOME/tmp
YAML
mkdir -p "$FLINK_HOME/tmp"
cat > "$FLINK_HOME/conf/log4j.properties" <<'PROPS'
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = MainAppender
appender.main.name = MainAppender
appender.main.type = File
appender.main.fileName = ${sys:log.file}
appender.main.append = false
appender.main.layout.type = PatternLayout
appender.main.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %-60c %x - %m%n
logger.akka.name = akka
logger.akka.level = WARN
logger.pekko.name = org.apache.pekko
logger.pekko.level = WARN
PROPS

# The --add-opens/--add-exports Flink's own config.yaml passes on Java 17.
JAVA_OPENS=(
  --add-exports=java.base/sun.net.util=ALL-UNNAMED --add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED
  --add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.net=ALL-UNNAMED
  --add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens=java.base/java.text=ALL-UNNAMED --add-opens=java.base/java.time=ALL-UNNAMED
  --add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED
)
CP="$FLINK_HOME/lib/*"
CONF=$FLINK_HOME/conf

resource_params() {
  # resource_params GET_JM_RESOURCE_PARAMS|GET_TM_RESOURCE_PARAMS -> "JVM_ARGS\nDYNAMIC_CONFIGS",
  # computed by Flink itself, exactly as bin/jobmanager.sh and bin/taskmanager.sh do.
  java -cp "$CP" org.apache.flink.runtime.util.bash.BashJavaUtils "$1" --configDir "$CONF" 2>/dev/null \
    | sed -n 's/^BASH_JAVA_UTILS_EXEC_RESULT://p' | tail -2
}

launch() {
  # launch NAME MAIN_CLASS GET_*_RESOURCE_PARAMS [args...]
  local name=$1 main=$2 which=$3; shift 3
  local params jvm dyn
  params=$(resource_params "$which")
  jvm=$(sed -n 1p <<<"$params"); dyn=$(sed -n 2p <<<"$params")
  # shellcheck disable=SC2086  # $jvm and $dyn are word lists computed by Flink
  start_daemon "$name" "$FLINK_HOME/log/$name.out" \
    java $jvm "${JAVA_OPENS[@]}" -Dlog.file="$FLINK_HOME/log/$name.log" \
      -Dlog4j.configurationFile="file:$CONF/log4j.properties" -cp "$CP" "$main" --configDir "$CONF" "$@" $dyn
}

taskmanager_registered() {
  curl -fsS -m 3 "http://localhost:$REST_PORT/taskmanagers" 2>/dev/null \
    | "${PYTHON:-python}" -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)["taskmanagers"] else 1)'
}

# --- 4. start what is down, wait until a TaskManager is registered ---------------------------
if ! http_ok "http://localhost:$REST_PORT/config"; then
  if pid_alive flink-jobmanager; then
    : # starting up; wait below
  elif ss -ltn "sport = :$REST_PORT" | grep -q LISTEN; then
    echo "flink.sh: port $REST_PORT is taken by something that is not a Flink REST endpoint; free it and rerun" >&2
    exit 1
  else
    launch flink-jobmanager org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint \
      GET_JM_RESOURCE_PARAMS --executionMode cluster
  fi
fi
wait_for "Flink JobManager REST on :$REST_PORT (log: $FLINK_HOME/log/flink-jobmanager.log)" 90 \
  http_ok "http://localhost:$REST_PORT/config"

if ! taskmanager_registered; then
  pid_alive flink-taskmanager || launch flink-taskmanager org.apache.flink.runtime.taskexecutor.TaskManagerRunner \
    GET_TM_RESOURCE_PARAMS
  wait_for "Flink TaskManager registration (log: $FLINK_HOME/log/flink-taskmanager.log)" 90 taskmanager_registered
fi

echo "BEAM_ETL_TEST_FLINK_MASTER=localhost:$REST_PORT"
echo "BEAM_ETL_FLINK_JOB_SERVER_JAR=$JOB_SERVER_JAR"
echo "BEAM_ETL_FLINK_VERSION=$FLINK_MINOR"
