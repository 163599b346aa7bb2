#!/usr/bin/env bash
# RabbitMQ on 127.0.0.1:5672 with a test user. Idempotent; prints the URL line.
source "$(dirname "$0")/_lib.sh"
apt_install rabbitmq-server

export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
if ! rabbitmqctl status >/dev/null 2>&1; then
  (rabbitmq-server >/tmp/beam-etl-rabbitmq.log 2>&1 &)
fi
wait_for "RabbitMQ" 120 rabbitmqctl status
rabbitmqctl await_startup >/dev/null
rabbitmqctl list_users | grep -q '^beam_etl' || {
  rabbitmqctl add_user beam_etl beam_etl >/dev/null
  rabbitmqctl set_user_tags beam_etl administrator >/dev/null
  rabbitmqctl set_permissions -p / beam_etl '.*' '.*' '.*' >/dev/null
}
echo "BEAM_ETL_TEST_RABBITMQ_URL=amqp://beam_etl:beam_etl@127.0.0.1:5672/%2F"
