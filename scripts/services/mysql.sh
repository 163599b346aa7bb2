#!/usr/bin/env bash
# MariaDB (MySQL protocol) with a ROW-format binlog on 127.0.0.1:3306, a test user and database.
# Idempotent: installs if missing, configures, starts if down, waits, prints the URL line.
source "$(dirname "$0")/_lib.sh"
apt_install mariadb-server

CONF=/etc/mysql/mariadb.conf.d/99-beam-etl.cnf
WANT=$(cat <<'CONF'
[mysqld]
bind-address = 127.0.0.1
server_id = 1
log_bin = /var/lib/mysql/mysql-bin
binlog_format = ROW
binlog_row_image = FULL
binlog_row_metadata = FULL
innodb_flush_log_at_trx_commit = 2
CONF
)
RESTART=0
if [ "$(cat "$CONF" 2>/dev/null)" != "$WANT" ]; then
  printf '%s\n' "$WANT" > "$CONF"
  RESTART=1
fi
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if [ "$RESTART" = 1 ] && mysqladmin ping --silent 2>/dev/null; then
  mysqladmin shutdown  # pick up the changed settings
  for _ in $(seq 1 30); do mysqladmin ping --silent 2>/dev/null || break; sleep 1; done
fi
if ! mysqladmin ping --silent 2>/dev/null; then
  (mysqld_safe >/tmp/beam-etl-mariadb.log 2>&1 &)
fi
wait_for "MariaDB" 60 mysqladmin ping --silent
mysql -uroot <<'SQL'
CREATE DATABASE IF NOT EXISTS beam_etl;
CREATE USER IF NOT EXISTS 'beam_etl'@'127.0.0.1' IDENTIFIED BY 'beam_etl';
CREATE USER IF NOT EXISTS 'beam_etl'@'localhost' IDENTIFIED BY 'beam_etl';
GRANT ALL PRIVILEGES ON *.* TO 'beam_etl'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'beam_etl'@'localhost' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
echo "BEAM_ETL_TEST_MYSQL_URL=mysql://beam_etl:beam_etl@127.0.0.1:3306/beam_etl"
