-- Every VM state change (and every new assignment) is announced on one channel, delivered at
-- commit. Each web process holds ONE listening connection and fans the events out to the
-- agents it serves, instead of one waiting Postgres connection per VM as in the original.
CREATE OR REPLACE FUNCTION lablink_vm_notify() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('lablink_vm', json_build_object('id', NEW.id, 'state', NEW.state)::text);
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
--> statement-breakpoint
CREATE TRIGGER vms_state_notify
  AFTER UPDATE OF state, assignment_id ON vms
  FOR EACH ROW
  WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.assignment_id IS DISTINCT FROM NEW.assignment_id)
  EXECUTE FUNCTION lablink_vm_notify();
