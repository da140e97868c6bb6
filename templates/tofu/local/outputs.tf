output "instance_ip" {
  description = "The address of the instance: this machine."
  value       = "127.0.0.1"
}

output "instance_dir" {
  description = "The directory the tracker is deployed in."
  value       = terraform_data.instance.output.dir
}
